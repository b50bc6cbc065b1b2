"""The rollout journal: ``.fleet/rollouts/<id>.jsonl``, append-only, one fsync'd event per line.

The journal is the truth about a rollout: `status` replays it, `resume`
continues from it after the controller died at any point, `abort` appends to
it from another process. A running rollout holds an exclusive ``flock`` on
``<id>.lock`` (the kernel drops it when the process dies, even on SIGKILL), so
"running" and "interrupted" are told apart without trusting a PID file. Two
rollouts may not share devices while the first is unfinished: creation checks
that under ``.fleet/rollouts/.create.lock``.

>>> j = Journal.create(project, header={"artifact": "os.bundle"}, devices=["a"])  # doctest: +SKIP
>>> j.append({"event": "device_finished", "device": "a", "outcome": "succeeded"})  # doctest: +SKIP
>>> Journal.open(project, j.id).report().devices["a"].outcome                       # doctest: +SKIP
'succeeded'
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from fleet_runtime.durable import LockTimeout, acquire_lock, file_lock, is_locked

from fleet.errors import ConfigError, UsageError
from fleet.project import Project
from fleet.rollout.report import TERMINAL, Event, Report, replay

INTERRUPTED = "interrupted"  # status shown for an unfinished rollout nobody is running


class RolloutConflict(UsageError):
    """Another unfinished rollout already targets some of these devices."""


def rollouts_dir(project: Project) -> Path:
    path = project.state_dir / "rollouts"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def new_id() -> str:
    return time.strftime("r-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(2)


class Journal:
    """One rollout's event log. Thread-safe appends; each line is written and fsync'd."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.id = path.stem
        self._write_lock = threading.Lock()
        self._lock_fd: int | None = None
        self._read_offset = 0
        self._abort_seen: str | None = None
        self._pause_seen: str | None = None

    # lifecycle -------------------------------------------------------------
    @classmethod
    def create(cls, project: Project, *, header: dict[str, Any], devices: list[str],
               rollout_id: str | None = None) -> Journal:
        """Start a journal, refusing if an unfinished rollout shares any device."""
        folder = rollouts_dir(project)
        with file_lock(folder / ".create.lock", mode=0o600):
            refuse_overlap(project, set(devices))
            journal = cls(folder / f"{rollout_id or new_id()}.jsonl")
            if journal.path.exists():
                raise UsageError(f"rollout {journal.id} already exists")
            journal.acquire()
            journal.append({"event": "rollout", "id": journal.id, "devices": devices, **header})
        return journal

    @classmethod
    def open(cls, project: Project, rollout_id: str | None = None) -> Journal:
        """An existing journal by id; the latest one when `rollout_id` is None."""
        folder = rollouts_dir(project)
        if rollout_id is None:
            found = sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
            if not found:
                raise UsageError("no rollouts yet", fix="start one with `fleet ota rollout`")
            return cls(found[-1])
        path = folder / f"{rollout_id}.jsonl"
        if not path.exists():
            known = ", ".join(p.stem for p in sorted(folder.glob("*.jsonl"))[-5:]) or "none"
            raise UsageError(f"no rollout '{rollout_id}'", where=str(folder),
                             fix=f"recent rollouts: {known}")
        return cls(path)

    def acquire(self) -> None:
        """Take the run lock; refuse if another live process holds it."""
        try:
            fd = acquire_lock(self.path.with_suffix(".lock"), timeout=0, mode=0o600)
        except LockTimeout:
            raise UsageError(f"rollout {self.id} is running in another process",
                             fix=f"watch it with `fleet ota status {self.id}`") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def is_running(self) -> bool:
        """Does some live process hold this rollout's run lock (us included)?"""
        return self._lock_fd is not None or is_locked(self.path.with_suffix(".lock"))

    # writing ---------------------------------------------------------------
    def append(self, event: Event) -> None:
        """Append one event and fsync before returning (O_APPEND: other writers interleave
        whole lines, e.g. `fleet ota abort` from another shell)."""
        event = {"t": round(time.time(), 3), **event}
        line = (json.dumps(event, sort_keys=True, default=str) + "\n").encode()
        with self._write_lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    __call__ = append  # a Journal is an event sink for the runner

    # reading ---------------------------------------------------------------
    def events(self) -> list[Event]:
        """Every complete event; a torn last line (killed mid-write) is ignored."""
        out = []
        for number, raw in enumerate(self.path.read_bytes().splitlines(keepends=True), start=1):
            if not raw.endswith(b"\n"):
                break
            try:
                out.append(json.loads(raw))
            except ValueError as exc:
                raise ConfigError(f"corrupt journal line {number}", where=str(self.path),
                                  fix="the rollout cannot be replayed; start a new one") from exc
        return out

    def report(self) -> Report:
        """Replay to state; an unfinished rollout nobody runs is INTERRUPTED."""
        report = replay(self.events())
        if report.status not in TERMINAL and not self.is_running() and report.status != "paused":
            report.status = INTERRUPTED
            report.reason = report.reason or "the controller stopped; `fleet ota resume` continues"
        return report

    def watch_from_now(self) -> None:
        """Make the polls see only events appended from now on (not an old run's abort)."""
        self._read_offset = self.path.stat().st_size
        self._abort_seen = self._pause_seen = None

    def abort_poll(self) -> str | None:
        """New `abort_requested` events since the last call (the runner's Control poll)."""
        self._read_requests()
        found, self._abort_seen = self._abort_seen, None
        return found

    def pause_poll(self) -> str | None:
        """A `pause_requested` event since `watch_from_now` (the runner's Control poll)."""
        self._read_requests()
        return self._pause_seen

    def _read_requests(self) -> None:
        """Note the abort and pause requests appended since the last read."""
        with self.path.open("rb") as fh:
            fh.seek(self._read_offset)
            chunk = fh.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._read_offset += len(complete)
        for raw in complete.splitlines():
            event = json.loads(raw)
            if event.get("event") == "abort_requested" and self._abort_seen is None:
                self._abort_seen = str(event.get("reason") or "abort requested")
            elif event.get("event") == "pause_requested":
                self._pause_seen = str(event.get("reason") or "pause requested")


def refuse_overlap(project: Project, devices: set[str], exclude: str | None = None) -> None:
    """Raise RolloutConflict naming the first unfinished rollout that shares a device."""
    for path in sorted(rollouts_dir(project).glob("*.jsonl")):
        other = Journal(path)
        if other.id == exclude:
            continue
        report = other.report()
        if report.status in TERMINAL:
            continue
        shared = sorted(devices & set(report.header.get("devices", [])))
        if shared:
            raise RolloutConflict(
                f"rollout {other.id} ({report.status}) already targets {len(shared)} of these "
                f"devices ({', '.join(shared[:3])}{'...' if len(shared) > 3 else ''})",
                fix=f"wait for it, or `fleet ota resume {other.id}` / `fleet ota abort {other.id}`")
