"""fleet-agent imports only the module of the command it runs (#19: start-up on small cores)."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

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
