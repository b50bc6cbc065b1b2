"""Shared fixtures: a fleet project, a lab fleet behind real SSH servers, and the CLI.

Servers are real: OpenSSH `sshd` (installed by `make test` as root) and
asyncssh's server. Each lab is torn down by PID at the end of its scope.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleet.cli.app import app
from fleet.lab import Lab
from fleet.project import Project

HAVE_SSHD = bool(shutil.which("sshd") or Path("/usr/sbin/sshd").exists())
SSH_KINDS = ["openssh", "asyncssh"]


def require_ssh(kind: str) -> None:
    if kind == "openssh" and not HAVE_SSHD:
        if os.environ.get("CI"):
            pytest.fail("OpenSSH sshd is required in CI (scripts/system-deps.sh installs it)")
        pytest.skip("OpenSSH sshd not installed (apt-get install openssh-server)")


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def run_cli(project: Path, *args: str, env: dict[str, str] | None = None) -> CliResult:
    """Run `fleet --project PROJECT ARGS` in-process, colour off, fixed width."""
    runner = CliRunner()
    result = runner.invoke(app, ["--project", str(project), "--no-color", *args],
                           env={"COLUMNS": "200", **(env or {})}, catch_exceptions=False)
    return CliResult(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def project(project_dir: Path) -> Project:
    return Project.locate(project_dir)


def start_lab(root: Path, sites: int, per_site: int, ssh: str) -> Lab:
    require_ssh(ssh)
    lab = Lab(Project.locate(root))
    lab.up(sites, per_site, ssh=ssh)
    return lab


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
