"""The controller's client for the agent protocol (the device side is
``fleet_runtime/agent/protocol.py``). The only place that knows how agent
commands are invoked and how their answers look.

>>> agent = agent_for(task)          # inside a Nornir task   # doctest: +SKIP
>>> agent.info()["software"]                                  # doctest: +SKIP
'1.0.0'
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from nornir.core.task import Task

from fleet.errors import AgentCallError
from fleet.transport import CONNECTION_NAME, SSHSession

PROTOCOL = 1
# The oldest agent that speaks everything this controller asks for (commands, fields).
MIN_AGENT_VERSION = "0.1.0"
Progress = Callable[[dict[str, Any]], None]


@dataclass
class Agent:
    session: SSHSession
    device: str
    path: str = "fleet-agent"

    def call(self, command: str, *args: str, stdin: bytes | IO[bytes] | None = None,
             timeout: float | None = None, on_progress: Progress | None = None) -> dict[str, Any]:
        """Run ``fleet-agent COMMAND ARGS`` and return its payload; failures raise AgentCallError."""
        argv = [self.path, command, *args]
        res = self.session.exec(argv, stdin=stdin, timeout=timeout,
                                on_stderr_line=_progress_sink(on_progress))
        answer = parse_answer(self.device, res.stdout, res.stderr, res.rc)
        if not answer["ok"]:
            err = answer.get("error") or {}
            raise AgentCallError(self.device, str(err.get("code", "error")),
                                 str(err.get("message", "")))
        return answer

    def info(self) -> dict[str, Any]:
        return self.call("info")

    def health(self, *flags: str) -> dict[str, Any]:
        return self.call("health", *flags)

    def checksum(self, path: str) -> str:
        return str(self.call("checksum", path)["sha256"])

    def receive(self, session: SSHSession, remote: str, offset: int, src: IO[bytes]) -> str:
        """`SSHSession.put`'s receiver: `src` into REMOTE.part from `offset`, hashed on
        arrival by ``fleet-agent receive``; the SHA-256 of the whole ``.part``."""
        argv = [self.path, "receive", remote, "--offset", str(offset)]
        left = os.fstat(src.fileno()).st_size - offset
        # The command timeout is for commands; a transfer gets time for its bytes at 2 Mbit/s.
        res = session.exec_file(argv, src, timeout=max(self.session.command_timeout, left / 250e3))
        answer = parse_answer(self.device, res.stdout, res.stderr, res.rc)
        if not answer["ok"]:
            err = answer.get("error") or {}
            raise AgentCallError(self.device, str(err.get("code", "error")),
                                 str(err.get("message", "")))
        return str(answer["sha256"])


def parse_answer(device: str, stdout: bytes, stderr: bytes, rc: int) -> dict[str, Any]:
    """The one JSON object the agent prints, checked against the protocol."""
    text = stdout.decode(errors="replace").strip()
    try:
        answer = json.loads(text.splitlines()[-1]) if text else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or "ok" not in answer:
        detail = (stderr.decode(errors="replace").strip() or text or f"exit {rc}")[-300:]
        raise AgentCallError(device, "protocol", f"no agent answer (exit {rc}): {detail}")
    if answer.get("protocol") != PROTOCOL:
        theirs = answer.get("protocol")
        age = "older" if isinstance(theirs, int) and theirs < PROTOCOL else "other"
        raise AgentCallError(device, "protocol",
                             f"agent speaks protocol {theirs}, {age} than the {PROTOCOL} this "
                             "controller needs; install the matching edgefleet-runtime on the device")
    return answer


def version_tuple(text: str) -> tuple[int, ...]:
    """``"1.10.2"`` -> ``(1, 10, 2)``; anything unparsable sorts first."""
    try:
        return tuple(int(part) for part in text.split("+")[0].split("."))
    except ValueError:
        return ()


def outdated_agent(info: dict[str, Any]) -> str | None:
    """Why a device's agent (its `info` answer) is too old for this controller, or None."""
    version = str(info.get("agent_version") or "unknown")
    if version_tuple(version) >= version_tuple(MIN_AGENT_VERSION):
        return None
    return (f"fleet-agent {version} is older than {MIN_AGENT_VERSION}, which this controller "
            f"(protocol {PROTOCOL}) needs; update edgefleet-runtime on the device")


def _progress_sink(on_progress: Progress | None) -> Callable[[bytes], None] | None:
    if on_progress is None:
        return None

    def sink(line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            return
        if isinstance(msg, dict) and "progress" in msg:
            on_progress(msg["progress"])

    return sink


def agent_for(task: Task) -> Agent:
    """The agent of the task's host, over its (cached) fleet_ssh connection."""
    session = task.host.get_connection(CONNECTION_NAME, task.nornir.config)
    return Agent(session, task.host.name, str(task.host.get("agent", "fleet-agent")))
