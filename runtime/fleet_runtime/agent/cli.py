"""`fleet-agent` entry point: argparse dispatch to command modules.

Each module in COMMAND_MODULES exposes ``register(subparsers)``, which adds its
subcommands with ``set_defaults(handler=fn)``; ``fn(args, layout) -> dict``
returns the success payload or raises AgentError. Add a capability by adding
its module name here.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

from fleet_runtime.agent.protocol import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    AgentError,
    emit,
    failure,
    success,
)
from fleet_runtime.layout import Layout, lab_faults

COMMAND_MODULES = ("info", "health", "checksum", "logs", "ota", "provision", "rtsp", "daemon")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        emit(failure("usage", f"{self.prog}: {message}"))
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fleet-agent", description="edgefleet device agent (JSON in/out)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"fleet_runtime.agent.{name}").register(sub)
    return parser


def _apply_lab_slowness(layout: Layout) -> None:
    delay = lab_faults(layout).get("slow")
    if delay:
        time.sleep(float(delay))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    layout = Layout.from_env()
    _apply_lab_slowness(layout)
    try:
        payload = args.handler(args, layout)
    except AgentError as exc:
        emit(failure(exc.code, exc.message))
        return EXIT_FAILED
    except OSError as exc:
        emit(failure("os-error", f"{exc.strerror or exc} ({exc.filename or 'no file'})"))
        return EXIT_FAILED
    emit(success(payload))
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    os.umask(0o022)
    sys.exit(main())
