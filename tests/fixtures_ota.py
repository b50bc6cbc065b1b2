"""CLI and lab helpers for the OTA and firmware tests.

Imported by module name rather than ``from conftest import``: several conftest.py
files exist under tests/, and pytest keeps only the last one as ``conftest``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleet.cli.app import app
from fleet.lab import Lab
from fleet.project import Project

HAVE_SSHD = bool(shutil.which("sshd") or Path("/usr/sbin/sshd").exists())


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def run_cli(project: Path, *args: str, env: dict[str, str] | None = None) -> CliResult:
    """`fleet --project PROJECT --no-color ARGS` in-process, fixed width."""
    result = CliRunner().invoke(app, ["--project", str(project), "--no-color", *args],
                                env={"COLUMNS": "200", **(env or {})}, catch_exceptions=False)
    return CliResult(result.exit_code, result.stdout, result.stderr)


def ssh_kind() -> str:
    if HAVE_SSHD:
        return "openssh"
    if os.environ.get("CI"):
        pytest.fail("OpenSSH sshd is required in CI (scripts/system-deps.sh installs it)")
    return "asyncssh"


def start_lab(root: Path, sites: int, per_site: int) -> Lab:
    lab = Lab(Project.locate(root))
    lab.up(sites, per_site, ssh=ssh_kind())
    return lab
