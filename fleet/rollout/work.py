"""Rollout work: the contract between the engine and what it rolls out, and the kinds by name.

The engine (``engine.py``), the runner and the IoT Jobs path never know what
they roll out; they call a `Work`. A kind registers a class under its name
(``ota`` here, ``app`` next); ``work_from_header`` rebuilds the work of a
journaled rollout by that name, so ``resume``, ``retry``, ``abort`` and
``status`` work for every registered kind. docs/work-kinds.md walks through
adding one.

>>> register("marker", "tests.rollout.test_engine:MarkerWork")   # doctest: +SKIP
>>> work_from_header(project, {"kind": "ota", "artifact": "os-1.1.0.bundle"})  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from nornir.core import Nornir
from nornir.core.inventory import Host
from nornir.core.task import MultiResult, Result, Task

from fleet.errors import FleetError
from fleet.project import Project

Progress = Callable[[str, str, dict[str, Any]], None]  # (device, step, fields)


class Work(Protocol):
    """What a rollout applies to each device. Everything the engine reads is here."""

    @property
    def kind(self) -> str:
        """The registered name; the journal header carries it (``header()["kind"]``)."""

    @property
    def artifact(self) -> Path:
        """The file the devices get (IoT Jobs uploads it)."""

    @property
    def version(self) -> str:
        """What a device reports once the work is done on it."""

    def header(self) -> dict[str, Any]:
        """What the journal keeps so `from_header` can rebuild this work (with ``kind``)."""

    def decide(self, task: Task) -> Result:
        """Nornir task, read-only: the device's facts and the decision `apply` would act
        on (``plan``). Result: ``{"state": change|current|refused|offline, ...}``."""

    @property
    def apply(self) -> Callable[..., Result]:
        """The Nornir task that makes the change (it decides first, with the same
        function as `decide`, and honours dry_run)."""

    def params(self) -> dict[str, Any]:
        """Keyword arguments for `apply`."""

    def accept(self, multi: MultiResult) -> str | None:
        """The health gate on a finished, unfailed `apply` result: None, or why the
        device does not count as done (judged on what the device reported)."""

    @property
    def gate(self) -> Callable[[Task], Result] | None:
        """A task run after `apply` on each device (None: `accept` needs no extra call)."""

    def verify(self, task: Task) -> Result:
        """After a controller crash, read-only: is the device already done? A failed
        Result means `apply` continues it from its own state."""

    def probe(self, nr: Nornir) -> Callable[[Host], bool] | None:
        """``probe(host)``: does the device answer now (offline policy)? None: always."""

    def cancel(self, host: Host) -> None:
        """The runner gave up waiting for `host`: stop before anything irreversible."""


class WorkKind(Protocol):
    """A registered kind: a class whose `from_header` rebuilds its work."""

    def from_header(self, project: Project, header: dict[str, Any],
                    progress: Progress | None = None) -> Work: ...


# name -> "module:Class", imported when first used so `fleet --help` stays fast; or the class.
KINDS: dict[str, str | WorkKind] = {"ota": "fleet.rollout.update:OtaWork",
                                    "play": "fleet.play.work:PlayWork",
                                    "app": "fleet.apps.work:AppWork"}


def register(kind: str, where: str | WorkKind) -> None:
    """Make rollouts of `kind` resumable: `where` is ``"module:Class"`` or the class."""
    KINDS[kind] = where


def kind_named(kind: str) -> WorkKind:
    where = KINDS.get(kind)
    if where is None:
        raise FleetError(f"rollout kind {kind!r} is not one this controller knows "
                         f"({', '.join(sorted(KINDS))})",
                         fix="resume it with the edgefleet version that started it")
    if isinstance(where, str):
        module, _, name = where.partition(":")
        found: WorkKind = getattr(importlib.import_module(module), name)
        return found
    return where


def work_from_header(project: Project, header: dict[str, Any],
                     progress: Progress | None = None) -> Work:
    """Rebuild the work of a journaled rollout (resume, retry) by its registered kind."""
    return kind_named(str(header.get("kind"))).from_header(project, header, progress)
