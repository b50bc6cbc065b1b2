"""fleet-agent imports only the module of the command it runs (#19: start-up on small cores)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fleet_runtime.agent.cli import COMMAND_MODULES, COMMANDS


@pytest.mark.parametrize("module", COMMAND_MODULES)
def test_command_table_names_every_command_of_every_module(module: str) -> None:
    sub = argparse.ArgumentParser().add_subparsers()
    importlib.import_module(f"fleet_runtime.agent.{module}").register(sub)
    assert {name: COMMANDS.get(name) for name in sub.choices} == dict.fromkeys(sub.choices, module)


def test_every_module_in_the_table_is_a_command_module() -> None:
    assert set(COMMANDS.values()) == set(COMMAND_MODULES)


def test_a_health_call_imports_no_other_command_module() -> None:
    probe = ("import sys\n"
             "from fleet_runtime.agent.cli import build_parser\n"
             "args = build_parser('health').parse_args(['health'])\n"
             "print(args.command, ' '.join(m.rsplit('.', 1)[1] for m in sys.modules\n"
             "      if m.startswith('fleet_runtime.agent.')))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.split(maxsplit=1)
    assert out[0] == "health"
    loaded = set(out[1].split())
    assert not loaded & {"ota", "provision", "daemon", "logs", "rtsp", "checksum"}, loaded


def loaded_by(command: str, root: Path, modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` one `fleet-agent COMMAND` on the device at `root` imported (in a
    fresh interpreter, as sshd starts it), the call answering with exit 0."""
    probe = ("import json, sys\n"
             "from fleet_runtime.agent.cli import main\n"
             "sys.stdout = open('/dev/null', 'w')\n"
             f"assert main([{command!r}]) == 0\n"
             f"sys.stderr.write(json.dumps([m for m in {modules!r} if m in sys.modules]))\n")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env={**os.environ, "FLEET_ROOT": str(root)}, check=True)
    return list(json.loads(run.stderr))


def test_a_health_call_on_a_provisioned_device_imports_no_cryptography_or_http(
        tmp_path: Path) -> None:
    """A device without applications answers `health` without cryptography's x509 or
    urllib (a third of the call's start-up): the certificate's facts are parsed once and
    kept in run/ beside the certificate's text."""
    from fleet_runtime.layout import Layout, atomic_write_json
    from runtime.test_health_checks import write_cert

    layout = Layout(tmp_path)
    atomic_write_json(layout.device_json, {"name": "dev1", "site": "berlin"})
    write_cert(layout, 365)
    heavy = ("cryptography", "urllib.request", "http.client")
    assert loaded_by("health", tmp_path, heavy) == ["cryptography"]  # the first call parses it
    assert loaded_by("health", tmp_path, heavy) == []


def test_a_health_call_on_a_device_without_applications_loads_no_app_flow(
        tmp_path: Path) -> None:
    """A device's app store exists from the factory on; with no application in it, `health`
    has no flow to read and imports neither the app modules nor urllib (#19)."""
    from fleet_runtime.layout import Layout, atomic_write_json

    layout = Layout(tmp_path)
    atomic_write_json(layout.device_json, {"name": "dev1", "site": "berlin"})
    (layout.apps / ".blobs").mkdir(parents=True)  # a store with no application in it
    assert loaded_by("health", tmp_path, ("fleet_runtime.apps.flow", "urllib.request")) == []


@pytest.mark.parametrize("command", ["health", "info"])
def test_health_and_info_read_the_slots_without_the_update_machinery(tmp_path: Path,
                                                                     command: str) -> None:
    """The calls a controller makes of every device every few seconds read boot.json
    through slot_state: not the state machine and its bundles (tarfile), not dataclasses
    (with inspect, ast and dis), not what only a crash (traceback) or an app store with
    applications in it needs, not hashlib (the certificate's cached facts are keyed by
    its text); together a fifth of the call's CPU on a small core (#19)."""
    from fleet_runtime.layout import Layout, atomic_write_json
    from runtime.test_health_checks import write_cert

    layout = Layout(tmp_path)
    atomic_write_json(layout.device_json, {"name": "dev1", "site": "berlin"})
    atomic_write_json(layout.boot_json, {"active": "b", "slots": {"b": {"version": "1.2.0"}}})
    (layout.apps / ".blobs").mkdir(parents=True)
    write_cert(layout, 365)
    subprocess.run([sys.executable, "-m", "fleet_runtime.agent.cli", "health"], check=True,
                   capture_output=True, env={**os.environ, "FLEET_ROOT": str(tmp_path)})
    heavy = ("fleet_runtime.slots", "fleet_runtime.bundle", "tarfile", "dataclasses",
             "fleet_runtime.apps.versions", "secrets", "traceback", "hashlib")
    assert loaded_by(command, tmp_path, heavy) == []
    answer = subprocess.run([sys.executable, "-m", "fleet_runtime.agent.cli", command],
                            capture_output=True, text=True,
                            env={**os.environ, "FLEET_ROOT": str(tmp_path)})
    assert json.loads(answer.stdout)["software"] == "1.2.0"
