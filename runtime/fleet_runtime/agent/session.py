"""`fleet-agent session`: several commands over one SSH exec, for one controller run.

    fleet-agent session        # then, on stdin, one request per line:
    {"argv": ["health", "--slots"]}
    {"argv": ["commit"]}

First line out: ``{"ok": true, "protocol": 1, "session": [commands served]}``. Then each
request gets its command's one JSON object as one line on stdout, in order, exactly as
``fleet-agent ARGV...`` would print it; the session's own answer comes last, once stdin
ends (the controller closes it, or its connection dies). No daemon: the process lives as
long as the controller's exec, with that login's privileges. Requests are JSON argv lists
parsed by the agent's own parser, never a shell string; only short commands that read no
stdin and write no bulk output are served (``SERVED``), anything else is answered with a
``not-served`` error and the session goes on.

What it saves is a login and an interpreter start per command: on a device after a reboot
the controller's verification and its commit are one exec instead of two (#19).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

from fleet_runtime.agent.protocol import emit, failure, success
from fleet_runtime.layout import Layout

SERVED = ("activate", "checksum", "commit", "health", "info", "rollback", "slots")
MAX_REQUEST = 64 * 1024  # bytes in one request line
MAX_ARGS = 64


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("session", help="answer several commands over one connection "
                                       "(JSON lines on stdin, one answer line each)")
    p.set_defaults(handler=run_session)


def request_argv(line: bytes) -> list[str] | dict[str, Any]:
    """The argv a request line asks for, or the failure to answer it with."""
    if len(line) > MAX_REQUEST:
        return failure("bad-request", f"request over {MAX_REQUEST} bytes")
    try:
        request = json.loads(line)
    except ValueError:
        return failure("bad-request", 'not a JSON request; send {"argv": [...]} on one line')
    argv = request.get("argv") if isinstance(request, dict) else None
    if (not isinstance(argv, list) or not argv or len(argv) > MAX_ARGS
            or not all(isinstance(a, str) for a in argv)):
        return failure("bad-request", '"argv" must be a non-empty list of strings')
    if argv[0] not in SERVED:
        return failure("not-served", f"{argv[0]!r} is not served in a session; run it on its "
                                     f"own (served: {', '.join(SERVED)})")
    return argv


def run_session(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    from fleet_runtime.agent import cli  # the dispatcher that runs each request

    emit(success({"session": list(SERVED)}))
    served: list[str] = []
    while line := sys.stdin.buffer.readline():
        if not line.strip():
            continue
        argv = request_argv(line)
        if isinstance(argv, dict):
            emit(argv)
            continue
        served.append(argv[0])
        # The command prints its one answer line; a request the parser refuses prints its
        # usage error and exits, which ends that request, not the session.
        with contextlib.suppress(SystemExit):
            cli.main(argv)
    _log(layout, served)
    return {"served": served}


def _log(layout: Layout, served: list[str]) -> None:
    """One line in agent.log per session, naming what it ran (each state-changing command
    logs its own line as well, as it does on its own)."""
    from fleet_runtime.logs import device_logger

    # A read-only or missing log directory must not fail the session.
    with contextlib.suppress(OSError):
        device_logger(layout, "agent").info("session served: %s", ", ".join(served) or "nothing")
