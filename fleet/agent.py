"""The controller's client for the agent protocol (the device side is
``fleet_runtime/agent/protocol.py``). The only place that knows how agent
commands are invoked and how their answers look.

Answers come back as typed facts (``fleet.facts``): ``info()``, ``slots()``,
``health()``. The agent runs over SSH (``agent_for(task)``) or, for a device
root on this machine (the lab, first boot from a drive), as a local
subprocess with ``FLEET_ROOT`` set (``local_agent(root)``).

>>> agent = agent_for(task)          # inside a Nornir task   # doctest: +SKIP
>>> agent.info().software                                     # doctest: +SKIP
'1.0.0'
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from fleet_runtime import versions
from nornir.core.task import Task

from fleet.errors import AgentCallError, DeviceError
from fleet.facts import Blobs, DeployedApps, Health, Info, Slots
from fleet.transport import CONNECTION_NAME, ExecResult, Received, SSHSession

PROTOCOL = 1
# The oldest agent that speaks everything this controller asks for (commands, fields).
MIN_AGENT_VERSION = "0.1.0"
Progress = Callable[[dict[str, Any]], None]
SMALL_BLOB = 4 << 20  # bytes below which a blob travels over the open SSH connection
Call = tuple[Sequence[str], bytes | None]  # one command of a batch: argv and its stdin


def checked(device: str, answer: dict[str, Any]) -> dict[str, Any]:
    """`answer` (one call of a batch) when it is ok; else its AgentCallError."""
    return _checked(device, answer)


class Session(Protocol):
    """Where agent commands run: an SSH session (fleet.transport) or a local subprocess."""

    def exec(self, argv: list[str], *, stdin: bytes | IO[bytes] | None = None,
             timeout: float | None = None,
             on_stderr_line: Callable[[bytes], None] | None = None) -> ExecResult: ...


@dataclass
class LocalSession:
    """A device root on this machine: each command is a `fleet-agent` subprocess with
    FLEET_ROOT set, in `env` (never the controller's environment: it may hold secrets).
    Meant for short commands (boot, first boot, reset, reads): stdin is read whole, and
    progress lines arrive when the command has finished."""

    root: Path
    env: Mapping[str, str] = field(default_factory=dict)

    def exec(self, argv: list[str], *, stdin: bytes | IO[bytes] | None = None,
             timeout: float | None = None,
             on_stderr_line: Callable[[bytes], None] | None = None) -> ExecResult:
        from fleet.processes import clean_env

        data = stdin.read() if stdin is not None and not isinstance(stdin, bytes) else stdin
        env = {**(self.env or clean_env()), "FLEET_ROOT": str(self.root)}
        try:
            proc = subprocess.run(argv, input=data or b"", env=env, capture_output=True,
                                  timeout=timeout or 120.0, check=False)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{self.root.name}: {' '.join(argv[:2])} did not answer within "
                              f"{timeout or 120.0:.0f}s") from None
        if on_stderr_line is not None:
            for line in proc.stderr.splitlines():
                on_stderr_line(line)
        return ExecResult(proc.returncode, proc.stdout, proc.stderr)


def local_agent(root: Path, env: Mapping[str, str] | None = None) -> Agent:
    """The agent of the device root `root` on this machine (this Python's fleet-agent)."""
    path = str(Path(sys.executable).parent / "fleet-agent")
    return Agent(LocalSession(root, dict(env or {})), root.name, path)


@dataclass
class Agent:
    session: Session
    device: str
    path: str = "fleet-agent"

    def call(self, command: str, *args: str, stdin: bytes | IO[bytes] | None = None,
             timeout: float | None = None, on_progress: Progress | None = None) -> dict[str, Any]:
        """Run ``fleet-agent COMMAND ARGS`` and return its payload; failures raise AgentCallError."""
        answer = self.answer(command, *args, stdin=stdin, timeout=timeout,
                             on_progress=on_progress)
        if not answer["ok"]:
            err = answer.get("error") or {}
            raise AgentCallError(self.device, str(err.get("code", "error")),
                                 str(err.get("message", "")))
        return answer

    def answer(self, command: str, *args: str, stdin: bytes | IO[bytes] | None = None,
               timeout: float | None = None, on_progress: Progress | None = None
               ) -> dict[str, Any]:
        """Like `call`, but ``{"ok": false, "error": ...}`` comes back instead of raising."""
        res = self.session.exec([self.path, command, *args], stdin=stdin, timeout=timeout,
                                on_stderr_line=_progress_sink(on_progress))
        return parse_answer(self.device, res.stdout, res.stderr, res.rc)

    def call_file(self, command: str, *args: str, src: IO[bytes], timeout: float,
                  progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        """`call` with the rest of the open file `src` as stdin: over an SSH session the
        system's OpenSSH client carries it (`SSHSession.exec_file`, same pinned host key);
        `progress(offset)` as it is sent, and an exception from it hangs up."""
        argv = [self.path, command, *args]
        if isinstance(self.session, SSHSession):
            res = self.session.exec_file(argv, src, timeout=timeout, progress=progress)
        else:
            res = self.session.exec(argv, stdin=src, timeout=timeout)
        answer = parse_answer(self.device, res.stdout, res.stderr, res.rc)
        if not answer["ok"]:
            err = answer.get("error") or {}
            raise AgentCallError(self.device, str(err.get("code", "error")),
                                 str(err.get("message", "")))
        return answer

    def batch(self, calls: Sequence[Call], *, timeout: float | None = None,
              on_call: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
        """Run `calls` (argv, stdin) in one agent process (``fleet-agent batch``); each
        call's answer in order, ending at the first that failed (the later ones did not
        run). `on_call(index)` as each call starts. An agent without ``batch`` runs them
        one by one, with the same answers."""
        body = json.dumps({"calls": [
            {"argv": list(argv), **({"stdin_b64": base64.b64encode(data).decode()}
                                    if data else {})} for argv, data in calls]}).encode()

        def started(progress: dict[str, Any]) -> None:
            if on_call is not None and isinstance(progress.get("index"), int):
                on_call(progress["index"])

        try:
            answers = self.call("batch", stdin=body, timeout=timeout, on_progress=started)
        except AgentCallError as exc:
            if exc.code != "usage" or "invalid choice: 'batch'" not in exc.message:
                raise
            return self._one_by_one(calls, timeout, on_call)
        out = answers.get("answers")
        if not isinstance(out, list) or not all(isinstance(a, dict) and "ok" in a for a in out):
            raise AgentCallError(self.device, "protocol", "the batch answer lists no answers")
        return out

    def _one_by_one(self, calls: Sequence[Call], timeout: float | None,
                    on_call: Callable[[int], None] | None) -> list[dict[str, Any]]:
        out = []
        for index, (argv, data) in enumerate(calls):
            if on_call is not None:
                on_call(index)
            out.append(self.answer(argv[0], *argv[1:], stdin=data or None, timeout=timeout))
            if not out[-1]["ok"]:
                break
        return out

    def info(self) -> Info:
        return Info.from_answer(self.call("info"))

    def slots(self, *, wait_s: float = 0.0, verify: bool = False) -> Slots:
        """The slot state; `wait_s`: first wait (bounded) for an install still running."""
        args = (["--wait", str(wait_s)] if wait_s else []) + (["--verify"] if verify else [])
        return Slots.from_answer(self.call("slots", *args, timeout=wait_s + 30.0 if wait_s
                                           else None))

    def health(self, *flags: str) -> Health:
        return Health.from_answer(self.call("health", *flags))

    def app_list(self) -> DeployedApps:
        """Every application on the device and where its deploy stands (`app list`)."""
        return DeployedApps.from_answer(self.call("app", "list"))

    def blobs_have(self, shas: list[str]) -> Blobs:
        """Which of these blobs the device stores, partial sizes, its free space."""
        return Blobs.from_answer(self.call("blobs", "have", *shas))

    def checksum(self, path: str) -> str:
        return str(self.call("checksum", path)["sha256"])

    def snapshot(self, camera: str) -> bytes:
        """The camera's latest processed frame as JPEG (from the device's runtime)."""
        import base64

        return base64.b64decode(self.call("snapshot", "--camera", camera)["jpeg_base64"])

    def put_blob(self, session: SSHSession, sha: str, size: int, offset: int,
                 src: IO[bytes]) -> dict[str, Any]:
        """``blobs put``: `src` (positioned at `offset`) streams into the device's blob store,
        which hashes it as it arrives and keeps a short stream's bytes for the next offset."""
        argv = [self.path, "blobs", "put", sha, "--size", str(size), "--offset", str(offset)]
        timeout = max(session.command_timeout, (size - offset) / 250e3)
        if size - offset < SMALL_BLOB:  # a channel on the open connection: no new handshake
            res = session.exec(argv, stdin=src, timeout=timeout)
        else:  # the system's ssh client moves large files much faster than paramiko
            res = session.exec_file(argv, src, timeout=timeout)
        return _checked(self.device, parse_answer(self.device, res.stdout, res.stderr, res.rc))

    def receive(self, session: SSHSession, remote: str, offset: int, src: IO[bytes],
                progress: Callable[[int], None] | None = None,
                expect: str | None = None) -> Received:
        """`SSHSession.put`'s receiver: `src` into REMOTE.part from `offset`, hashed on
        arrival by ``fleet-agent receive``; the SHA-256 of the whole ``.part``, and whether
        the device renamed it to REMOTE because it matched `expect` (our hash, when known)."""
        argv = [self.path, "receive", remote, "--offset", str(offset)]
        left = os.fstat(src.fileno()).st_size - offset
        # The command timeout is for commands; a transfer gets time for its bytes at 2 Mbit/s.
        timeout = max(session.command_timeout, left / 250e3)
        try:
            answer = self._received(session, [*argv, *(["--expect", expect] if expect else [])],
                                    src, timeout, progress)
        except AgentCallError as exc:
            if not expect or exc.code != "usage":
                raise
            src.seek(offset)  # an agent without --expect refused before reading a byte
            answer = self._received(session, argv, src, timeout, progress)
        return Received(str(answer["sha256"]), answer.get("placed") is True)

    def _received(self, session: SSHSession, argv: list[str], src: IO[bytes], timeout: float,
                  progress: Callable[[int], None] | None) -> dict[str, Any]:
        res = session.exec_file(argv, src, timeout=timeout, progress=progress)
        answer = parse_answer(self.device, res.stdout, res.stderr, res.rc)
        if not answer["ok"]:
            err = answer.get("error") or {}
            raise AgentCallError(self.device, str(err.get("code", "error")),
                                 str(err.get("message", "")))
        return answer


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


def _checked(device: str, answer: dict[str, Any]) -> dict[str, Any]:
    if not answer["ok"]:
        err = answer.get("error") or {}
        raise AgentCallError(device, str(err.get("code", "error")), str(err.get("message", "")))
    return answer


def outdated_agent(info: dict[str, Any]) -> str | None:
    """Why a device's agent (its `info` answer) is too old for this controller, or None."""
    version = str(info.get("agent_version") or "unknown")
    if not versions.older(version, MIN_AGENT_VERSION):
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
