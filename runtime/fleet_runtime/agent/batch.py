"""`fleet-agent batch`: several agent commands in one process, answered together.

A controller step that needs three facts or three short changes pays one
process start instead of three: on a small core, and on any box under load,
starting Python is most of what a short command costs (an application deploy
made about twenty such calls per device). The request comes on stdin::

    {"calls": [{"argv": ["info"]},
               {"argv": ["blobs", "put", "SHA", "--size", "12"], "stdin_b64": "..."},
               {"argv": ["app", "stage", "-"], "stdin_b64": "..."}]}

Each call runs exactly as ``fleet-agent ARGV`` would (same parser, same
handler, same log line), its stdin the decoded ``stdin_b64`` (empty when
absent), in order. The first call that fails ends the batch: the calls after
it are not run, so a batch of changes behaves like the same commands run one
by one with ``&&``. The answer lists each call's own answer (``{"ok": ...}``)
in order, stopping at the failed one; before each call a progress line
``{"progress": {"step": "call", "index": I, "argv": [first two words]}}`` goes to
stderr, so the controller can show where the batch is. A batch cannot hold
another batch nor a command that never returns (``daemon``, ``app run``).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import sys
from typing import Any

from fleet_runtime.agent.protocol import EXIT_USAGE, AgentError, progress
from fleet_runtime.layout import Layout

MAX_CALLS = 64
NEVER_IN_A_BATCH = (("batch",), ("daemon",), ("app", "run"))


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("batch", help="run several commands in this one process (JSON on stdin)")
    p.set_defaults(handler=cmd_batch)


def _usage(message: str) -> AgentError:
    return AgentError("usage", f"batch: {message}", EXIT_USAGE)


def parse_calls(raw: str) -> list[tuple[list[str], bytes]]:
    """The request's calls as (argv, stdin bytes); AgentError (usage) naming what is wrong."""
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise _usage(f"stdin is not JSON: {exc}") from None
    calls = doc.get("calls") if isinstance(doc, dict) else None
    if not isinstance(calls, list) or not 0 < len(calls) <= MAX_CALLS:
        raise _usage(f'expected {{"calls": [...]}} with 1 to {MAX_CALLS} calls')
    out = []
    for number, call in enumerate(calls):
        argv = call.get("argv") if isinstance(call, dict) else None
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise _usage(f"calls[{number}].argv must be a non-empty list of strings")
        if any(tuple(argv[:len(bad)]) == bad for bad in NEVER_IN_A_BATCH):
            raise _usage(f"calls[{number}]: `{' '.join(argv[:2])}` cannot run in a batch")
        try:
            data = base64.b64decode(str(call.get("stdin_b64") or ""), validate=True)
        except (binascii.Error, ValueError):
            raise _usage(f"calls[{number}].stdin_b64 is not base64") from None
        out.append((list(argv), data))
    return out


def cmd_batch(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    from fleet_runtime.agent.cli import run_command

    calls = parse_calls(sys.stdin.read())
    answers: list[dict[str, Any]] = []
    for index, (argv, data) in enumerate(calls):
        progress("call", index=index, argv=argv[:2])
        answer = _with_stdin(data, lambda argv=argv: run_command(argv, layout)[1])
        answers.append(answer)
        if not answer.get("ok"):
            break
    return {"answers": answers}


def _with_stdin(data: bytes, fn: Any) -> Any:
    """Run `fn` with sys.stdin reading `data` (handlers read their input there)."""
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
    try:
        return fn()
    finally:
        sys.stdin = saved
