"""Helpers every test module may import (`from labkit import run_cli, start_lab`).

Kept out of conftest.py on purpose: several conftest.py files exist, and
`from conftest import` would pick whichever pytest loaded first.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleet.cli.main import app
from fleet.lab import Lab
from fleet.project import Project

HAVE_SSHD = bool(shutil.which("sshd") or Path("/usr/sbin/sshd").exists())
SSH_KINDS = ["openssh", "asyncssh"]

# fleet.yaml for tests that assert an exact verdict: the shared host's disk and memory
# (lab devices report the host's) must not turn a healthy device degraded.
CALM_HEALTH = ("health: {disk_warn_pct: 100, disk_fail_pct: 100, mem_warn_pct: 100, "
               "mem_fail_pct: 100}\n")


def in_ci() -> bool:
    # Imported when called: conftest.py loads ci_skips as a plugin after importing this module.
    import ci_skips

    return ci_skips.in_ci()


def require_ssh(kind: str) -> None:
    if kind == "openssh" and not HAVE_SSHD:
        if in_ci():
            pytest.fail("OpenSSH sshd is required in CI (scripts/system-deps.sh installs it)")
        pytest.skip("OpenSSH sshd not installed (apt-get install openssh-server)")


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def run_cli(project: Path, *args: str, env: dict[str, str] | None = None,
            stdin: str | None = None) -> CliResult:
    """Run `fleet --project PROJECT ARGS` in-process, colour off, fixed width."""
    runner = CliRunner()
    result = runner.invoke(app, ["--project", str(project), "--no-color", *args], input=stdin,
                           env={"COLUMNS": "200", **(env or {})}, catch_exceptions=False)
    return CliResult(result.exit_code, result.stdout, result.stderr)


def default_ssh_kind() -> str:
    """OpenSSH when installed (required in CI), asyncssh's server otherwise."""
    if HAVE_SSHD:
        return "openssh"
    if in_ci():
        pytest.fail("OpenSSH sshd is required in CI (scripts/system-deps.sh installs it)")
    return "asyncssh"


def start_lab(root: Path, sites: int, per_site: int, ssh: str | None = None) -> Lab:
    ssh = ssh or default_ssh_kind()
    require_ssh(ssh)
    lab = Lab(Project.locate(root))
    lab.up(sites, per_site, ssh=ssh)
    return lab


RELEASE_PASS = {"FLEET_RELEASE_PASSPHRASE": "correct-horse-battery"}
REPO = Path(__file__).resolve().parents[1]


def keyed_project(root: Path) -> Project:
    """A project with the repository's firmware recipes, its example inventory and a
    release key (passphrase RELEASE_PASS): enough to build and inspect bundles."""
    from fleet import firmware

    shutil.copytree(REPO / "firmware", root / "firmware")
    shutil.copytree(REPO / "inventories/example", root / "inventories/example")
    project = Project.locate(root)
    firmware.keygen(project, passphrase=RELEASE_PASS["FLEET_RELEASE_PASSPHRASE"].encode())
    return project
