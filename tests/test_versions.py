"""`fleet --version` and `fleet-agent --version` agree, an old agent is named, and
--help reads cleanly."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from labkit import run_cli

from fleet.agent import MIN_AGENT_VERSION, PROTOCOL, outdated_agent, parse_answer
from fleet.errors import AgentCallError

BIN = Path(sys.executable).parent


def _version(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    found = re.fullmatch(r"(fleet|fleet-agent) (\S+) \(agent protocol (\d+)\)\n", proc.stdout)
    assert found, proc.stdout
    return f"{found.group(2)} protocol {found.group(3)}"


def test_fleet_and_fleet_agent_print_the_same_version() -> None:
    ours = _version([str(BIN / "fleet"), "--version"])
    agent = _version([str(BIN / "fleet-agent"), "--version"])
    assert ours == agent == f"{__import__('fleet').__version__} protocol {PROTOCOL}"


def test_version_needs_no_project(tmp_path: Path) -> None:
    res = run_cli(tmp_path / "nowhere", "--version")
    assert res.exit_code == 0 and res.stdout.startswith("fleet ")


def test_an_agent_older_than_the_controller_needs_is_named() -> None:
    assert outdated_agent({"agent_version": MIN_AGENT_VERSION}) is None
    warning = outdated_agent({"agent_version": "0.0.9"})
    assert warning is not None and "0.0.9 is older than" in warning
    assert "update edgefleet-runtime" in warning


def test_an_agent_on_a_release_candidate_is_ordered_like_any_version() -> None:
    # The same order as bundles (fleet_runtime.versions): a newer pre-release is new enough.
    assert outdated_agent({"agent_version": "9.0.0-rc10"}) is None
    assert outdated_agent({"agent_version": "unknown"}) is not None


def test_an_older_protocol_is_refused_with_the_fix() -> None:
    answer = b'{"ok": true, "protocol": 0}\n'
    with pytest.raises(AgentCallError, match="older than the 1 this controller needs"):
        parse_answer("berlin-01", answer, b"", 0)


@pytest.mark.parametrize("argv", [["--help"], ["health", "--help"], ["lab", "up", "--help"]])
def test_help_shows_no_value_type_on_flags(argv: list[str]) -> None:
    proc = subprocess.run([str(BIN / "fleet"), *argv], capture_output=True, text=True,
                          env={"COLUMNS": "100", "PATH": "/usr/bin:/bin"}, check=False,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--help" in proc.stdout and "<bool>" not in proc.stdout


def test_register_warns_about_a_device_whose_agent_is_too_old(lab, tmp_path: Path) -> None:
    """A real lab device behind sshd whose agent reports an old version in its answers."""
    from ruamel.yaml import YAML

    old = tmp_path / "fleet-agent-0.0.9"
    old.write_text(f'#!/bin/sh\n"{BIN / "fleet-agent"}" "$@" | '
                   "sed 's/\"agent_version\": *\"[^\"]*\"/\"agent_version\": \"0.0.9\"/'\n")
    old.chmod(0o755)
    yaml = YAML()
    inventory = lab.project.inventories / "oldagent"
    inventory.mkdir()
    for name in ("groups.yaml", "defaults.yaml"):
        (inventory / name).write_text((lab.project.inventories / "lab" / name).read_text())
    hosts = yaml.load((lab.project.inventories / "lab" / "hosts.yaml").read_text())
    hosts["berlin-01"]["data"]["agent"] = str(old)
    with (inventory / "hosts.yaml").open("w") as fh:
        yaml.dump(hosts, fh)
    res = run_cli(lab.project.root, "devices", "register", "-i", "oldagent", "--site", "berlin")
    assert res.exit_code == 0, res.stderr
    said = " ".join(res.stderr.split())
    assert "berlin-01: fleet-agent 0.0.9 is older than 0.1.0" in said
    assert "berlin-02:" not in said  # its agent is current
