"""`fleet-agent` entry point: argparse dispatch to command modules.

Each module in COMMAND_MODULES exposes ``register(subparsers)``, which adds its
subcommands with ``set_defaults(handler=fn)``; ``fn(args, layout) -> dict``
returns the success payload or raises AgentError. Add a capability by adding
its module name here, and its commands to COMMANDS.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from fleet_runtime import __version__, labhooks
from fleet_runtime.agent.protocol import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    PROTOCOL,
    AgentError,
    emit,
    failure,
    success,
)
from fleet_runtime.layout import Layout, StateFileError

COMMAND_MODULES = ("info", "health", "checksum", "receive", "logs", "ota", "provision", "rtsp",
                   "daemon", "snapshot", "apps", "cameras", "batch")
# The module behind each command: a call imports only the module it runs. Health
# sweeps call the agent on every device every few seconds, and a Jetson's small
# cores pay for each import (tests/test_agent_startup.py keeps this table honest).
COMMANDS = {
    "info": "info", "health": "health", "checksum": "checksum", "receive": "receive",
    "logs": "logs",
    "install": "ota", "activate": "ota", "boot": "ota", "commit": "ota", "rollback": "ota",
    "slots": "ota", "reboot": "ota", "provision": "provision", "reset": "provision",
    "rtsp-probe": "rtsp", "daemon": "daemon", "snapshot": "snapshot",
    "app": "apps", "blobs": "apps", "cameras": "cameras", "batch": "batch",
}


class _BadUsage(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _BadUsage(f"{self.prog}: {message}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; given the `command` about to run, with only that command's module."""
    parser = _Parser(prog="fleet-agent", description="edgefleet device agent (JSON in/out)")
    parser.add_argument("--version", action="version",
                        version=f"fleet-agent {__version__} (agent protocol {PROTOCOL})")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    modules = (COMMANDS[command],) if command in COMMANDS else COMMAND_MODULES
    for name in modules:
        importlib.import_module(f"fleet_runtime.agent.{name}").register(sub)
    return parser


# Polled constantly by health sweeps; logging each call would only bloat agent.log.
QUIET_COMMANDS = frozenset({"info", "health", "checksum", "slots", "snapshot"})


def _log(layout: Layout, command: str, outcome: str, started: float, failed: bool) -> None:
    """One line per state-changing command (or any failure) in var/log/fleet/agent.log."""
    if command in QUIET_COMMANDS and not failed:
        return
    try:
        from fleet_runtime.logs import device_logger

        log = device_logger(layout, "agent")
        level = log.warning if failed else log.info
        level("%s %s (%.2fs)", command, outcome, time.monotonic() - started)
    except OSError:  # a read-only or missing log directory must not fail the command
        pass


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser(argv[0] if argv else None).parse_args(argv)
    except _BadUsage as exc:
        emit(failure("usage", str(exc)))
        return EXIT_USAGE
    layout = Layout.from_env()
    labhooks.slow_start(layout)
    code, answer = _call(args, layout)
    emit(answer)
    return code


def run_command(argv: list[str], layout: Layout) -> tuple[int, dict[str, Any]]:
    """`fleet-agent ARGV` in this process (``batch``): its exit status and its answer."""
    try:
        args = build_parser(argv[0]).parse_args(argv)
    except _BadUsage as exc:
        return EXIT_USAGE, failure("usage", str(exc))
    return _call(args, layout)


def _call(args: argparse.Namespace, layout: Layout) -> tuple[int, dict[str, Any]]:
    started = time.monotonic()
    try:
        payload = args.handler(args, layout)
    except AgentError as exc:
        _log(layout, args.command, f"failed: {exc.code}: {exc.message}", started, True)
        return exc.exit_code, failure(exc.code, exc.message)
    except OSError as exc:
        message = f"{exc.strerror or exc} ({exc.filename or 'no file'})"
        _log(layout, args.command, f"failed: os-error: {message}", started, True)
        return EXIT_FAILED, failure("os-error", message)
    except StateFileError as exc:
        _log(layout, args.command, f"failed: bad-state-file: {exc}", started, True)
        return EXIT_FAILED, failure("bad-state-file", str(exc))
    except Exception as exc:  # noqa: BLE001 - the controller needs its one JSON answer
        # A bug or a device file of the wrong shape: the answer says so in one line and
        # the traceback goes to agent.log, where `fleet logs` collects it.
        import traceback  # here: only a crash needs it, and every call would pay for it

        _log(layout, args.command, "failed: internal-error\n" + traceback.format_exc(),
             started, True)
        return EXIT_FAILED, failure("internal-error", f"{type(exc).__name__}: {exc}")
    _log(layout, args.command, "ok", started, False)
    return EXIT_OK, success(payload)


if __name__ == "__main__":  # pragma: no cover
    os.umask(0o022)
    sys.exit(main())
