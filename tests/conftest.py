"""Shared fixtures: a fleet project and lab fleets behind real SSH servers.

Servers are real: OpenSSH `sshd` (installed by `make test` as root) and
asyncssh's server. Each lab is torn down by PID at the end of its scope.
Plain helpers live in labkit.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from labkit import SSH_KINDS, default_ssh_kind, start_lab

from fleet.lab import Lab
from fleet.project import Project

# Plugins of their own, so that hooks defined here and theirs never replace each other:
# per-area progress lines and the `servers` mark (make test-fast): tests/areas.py;
# no silent skips under CI=true: tests/ci_skips.py.
pytest_plugins = ["areas", "ci_skips", "fixtures_device"]


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """In-process CLI calls (fleet-runtime's main runs logging.basicConfig) must not leave a
    root handler on a captured stream that is closed by the next test: a later warning would
    print a logging error with a traceback into another test's output."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def project(project_dir: Path) -> Project:
    return Project.locate(project_dir)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A 2-site x 2-device lab on OpenSSH (asyncssh if sshd is missing outside CI)."""
    lab = start_lab(tmp_path_factory.mktemp("lab"), 2, 2, default_ssh_kind())
    yield lab
    lab.down()


@pytest.fixture(scope="module", params=SSH_KINDS)
def any_lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The same 1-site x 2-device lab on each SSH server kind."""
    lab = start_lab(tmp_path_factory.mktemp(f"lab-{request.param}"), 1, 2, request.param)
    yield lab
    lab.down()
