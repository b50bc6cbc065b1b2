"""The play journal: ``.fleet/plays/<id>.jsonl``, append-only, one fsync'd event per line.

The same durable style as the rollout journal (and its line writer): a run
holds an ``flock`` on ``<id>.lock`` that the kernel drops when the process
dies, so "running" and "interrupted" are told apart. Events:

* ``playbook`` (header: file, its SHA-256, extra vars, check, tags, selection)
* per play: ``play_started``, the rollout runner's events with ``play``,
  ``task_done`` (device, task id, status, registered data, diff), ``play_finished``
* ``playbook_finished``

`resume` skips every (play, device, task) with a ``task_done`` and restores
what it registered.

>>> j = PlayJournal.create(project, {"playbook": "site.yaml"})   # doctest: +SKIP
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

from fleet.errors import UsageError
from fleet.project import Project
from fleet.rollout.journal import Journal
from fleet.rollout.report import Event, Report

RUNNING, INTERRUPTED = "running", "interrupted"


def plays_dir(project: Project) -> Path:
    path = project.state_dir / "plays"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def new_id() -> str:
    return time.strftime("p-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(2)


class PlayJournal(Journal):
    """A rollout journal's writer and lock, in the plays folder, with play-aware reading."""

    @classmethod
    def create_play(cls, project: Project, header: dict[str, Any]) -> PlayJournal:
        journal = cls(plays_dir(project) / f"{new_id()}.jsonl")
        journal.acquire()
        journal.append({"event": "playbook", "id": journal.id, **header})
        return journal

    @classmethod
    def open_play(cls, project: Project, play_id: str | None) -> PlayJournal:
        folder = plays_dir(project)
        if play_id is None:
            found = sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
            if not found:
                raise UsageError("no play runs yet", fix="start one with `fleet play PLAYBOOK`")
            return cls(found[-1])
        path = folder / f"{play_id}.jsonl"
        if not path.exists() or "/" in play_id:
            known = ", ".join(p.stem for p in sorted(folder.glob("*.jsonl"))[-5:]) or "none"
            raise UsageError(f"no play run {play_id!r}", where=str(folder),
                             fix=f"recent runs: {known}")
        return cls(path)

    def acquire(self) -> None:
        try:
            super().acquire()
        except UsageError:
            raise UsageError(f"play run {self.id} is running in another process",
                             fix=f"watch it with `fleet play status {self.id}`") from None

    def state(self) -> PlayState:
        return PlayState.of(self.events(), running=self.is_running())


class PlayState:
    """A play run replayed: header, per-play rollout reports, finished tasks, status."""

    def __init__(self) -> None:
        self.header: dict[str, Any] = {}
        self.status = RUNNING
        self.reason = ""
        self.reports: dict[int, Report] = {}
        self.names: dict[int, str] = {}
        self.devices: dict[int, list[str]] = {}
        self.finished_plays: dict[int, str] = {}
        self.tasks: dict[tuple[int, str, str], Event] = {}  # (play, device, task id) -> event
        self.order: list[Event] = []                        # task_done events, in order

    @classmethod
    def of(cls, events: list[Event], *, running: bool) -> PlayState:
        state = cls()
        for event in events:
            state.apply(event)
        if state.status == RUNNING and not running:
            state.status = INTERRUPTED
            state.reason = "the controller stopped; `fleet play resume` continues"
        return state

    def apply(self, event: Event) -> None:
        kind, play = event.get("event"), event.get("play")
        if kind == "playbook":
            self.header = {k: v for k, v in event.items() if k not in ("event", "t")}
        elif kind == "play_started":
            self.names[int(event["play"])] = str(event.get("name", ""))
            self.devices[int(event["play"])] = list(event.get("devices", []))
            self.reports.setdefault(int(event["play"]), Report())
        elif kind == "task_done":
            key = (int(event["play"]), str(event["device"]), str(event["task"]))
            self.tasks[key] = event
            self.order.append(event)
        elif kind == "play_finished":
            self.finished_plays[int(event["play"])] = str(event.get("status", ""))
        elif kind == "playbook_finished":
            self.status, self.reason = str(event["status"]), str(event.get("reason", ""))
        elif kind == "resumed":
            self.status, self.reason = RUNNING, ""
        elif play is not None:
            self.reports.setdefault(int(play), Report()).apply(event)

    @property
    def id(self) -> str:
        return str(self.header.get("id", ""))
