"""Shared fixtures: a fleet project and lab fleets behind real SSH servers.

Servers are real: OpenSSH `sshd` (installed by `make test` as root) and
asyncssh's server. Each lab is torn down by PID at the end of its scope.
Plain helpers live in labkit.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from labkit import HAVE_SSHD, SSH_KINDS, start_lab

from fleet.lab import Lab
from fleet.project import Project

# Per-area progress lines and the `servers` mark (make test-fast): tests/areas.py
pytest_plugins = ["areas"]


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def project(project_dir: Path) -> Project:
    return Project.locate(project_dir)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A 2-site x 2-device lab on OpenSSH (asyncssh if sshd is missing outside CI)."""
    kind = "openssh" if HAVE_SSHD or os.environ.get("CI") else "asyncssh"
    lab = start_lab(tmp_path_factory.mktemp("lab"), 2, 2, kind)
    yield lab
    lab.down()


@pytest.fixture(scope="module", params=SSH_KINDS)
def any_lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The same 1-site x 2-device lab on each SSH server kind."""
    lab = start_lab(tmp_path_factory.mktemp(f"lab-{request.param}"), 1, 2, request.param)
    yield lab
    lab.down()
