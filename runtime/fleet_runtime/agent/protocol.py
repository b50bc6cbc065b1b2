"""The agent protocol, device side.

Every `fleet-agent <command>` prints exactly one JSON object on stdout:
``{"ok": true, "protocol": 1, ...}`` or
``{"ok": false, "protocol": 1, "error": {"code": "...", "message": "..."}}``
and exits 0 (ok), 1 (command failed) or 2 (usage). Progress for long commands
goes to stderr as JSON lines ``{"progress": {...}}``. The controller's twin of
this module is ``fleet/agent.py``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

PROTOCOL = 1
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class AgentError(Exception):
    """An expected failure of a command: becomes the error object, never a traceback."""

    def __init__(self, code: str, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_code = exit_code  # EXIT_USAGE for bad input that argparse cannot see


def success(payload: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "protocol": PROTOCOL, **payload}


def failure(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "protocol": PROTOCOL, "error": {"code": code, "message": message}}


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def progress(step: str, **fields: Any) -> None:
    """One progress line on stderr; the controller renders these live."""
    sys.stderr.write(json.dumps({"progress": {"step": step, **fields}}) + "\n")
    sys.stderr.flush()
