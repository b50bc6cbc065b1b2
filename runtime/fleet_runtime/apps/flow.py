"""One application's deploy flow: a ``(state, event) -> state`` table, persisted before acting.

The same shape as the OTA flow (``fleet_runtime/flow.py``), for an application
instead of a slot::

    idle/done/failed/rolled-back/staged --stage--> staging --staged--> staged
    staging --failed--> failed                    (blobs missing: nothing switched)
    staged --activate--> activating --activated--> checking
    checking --healthy--> committing --committed--> done
    checking --unhealthy--> rolling-back --rolled-back--> rolled-back
    staged/activating/checking/done --rollback--> rolling-back

``app.json`` is written atomically before a state's action runs, and every
action is safe to run again, so a kill at any instant resumes where it stopped.
Through it all ``current`` names a complete version: the committed one until
``activating`` switches, the new one until ``rolling-back`` switches back.
``crash_point("app-<state>")`` and ``"app-<state>-done"`` are the kill points.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from fleet_runtime.apps import gate, settings, versions
from fleet_runtime.apps.blobs import BlobStore
from fleet_runtime.apps.release import parse
from fleet_runtime.apps.versions import AppDirs
from fleet_runtime.durable import atomic_write_json
from fleet_runtime.flow import FlowError, advance
from fleet_runtime.layout import Layout, read_json
from fleet_runtime.slots import crash_point

FORMAT = 1
MAX_STEPS = 32


class State(str, Enum):
    IDLE = "idle"
    STAGING = "staging"
    STAGED = "staged"
    ACTIVATING = "activating"
    CHECKING = "checking"
    COMMITTING = "committing"
    DONE = "done"
    ROLLING_BACK = "rolling-back"
    ROLLED_BACK = "rolled-back"
    FAILED = "failed"


class Event(str, Enum):
    STAGE = "stage"
    STAGED = "staged"
    ACTIVATE = "activate"
    ACTIVATED = "activated"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    COMMITTED = "committed"
    ROLLBACK = "rollback"
    ROLLED_BACK = "rolled-back"
    FAILED = "failed"


S, E = State, Event
RESTING = (S.IDLE, S.DONE, S.FAILED, S.ROLLED_BACK)
TABLE: dict[tuple[State, Event], State] = {
    **{(s, E.STAGE): S.STAGING for s in (*RESTING, S.STAGING, S.STAGED)},
    (S.STAGING, E.STAGED): S.STAGED,
    (S.STAGING, E.FAILED): S.FAILED,
    (S.STAGED, E.ACTIVATE): S.ACTIVATING,
    (S.ACTIVATING, E.ACTIVATED): S.CHECKING,
    (S.CHECKING, E.HEALTHY): S.COMMITTING,
    (S.CHECKING, E.UNHEALTHY): S.ROLLING_BACK,
    (S.COMMITTING, E.COMMITTED): S.DONE,
    **{(s, E.ROLLBACK): S.ROLLING_BACK for s in (S.STAGED, S.ACTIVATING, S.CHECKING, S.DONE)},
    (S.ROLLING_BACK, E.ROLLED_BACK): S.ROLLED_BACK,
}
# Actions that need nothing from outside: whoever comes next finishes one a kill left.
SELF_FINISHING = frozenset({S.STAGING, S.ACTIVATING, S.COMMITTING, S.ROLLING_BACK})


class AppFlowError(FlowError):
    """A refused event or a failed step of an application's flow (``code`` is stable)."""


Step = tuple[Event, dict[str, Any]]


@dataclass
class Context:
    layout: Layout
    name: str
    stop_at: frozenset[State] = frozenset()  # enter these, leave their action to a later call
    force: bool = False  # commit --force: skip the health gate
    health: dict[str, Any] = field(default_factory=dict)  # thresholds given on the command line
    on_enter: Callable[[dict[str, Any]], None] | None = None

    @property
    def dirs(self) -> AppDirs:
        return AppDirs(self.layout, self.name)


def read(layout: Layout, name: str) -> dict[str, Any]:
    doc = read_json(AppDirs(layout, name).root / "app.json", default=None)
    if doc is None:
        return {"format": FORMAT, "name": name, "state": S.IDLE.value, "committed": None,
                "previous": None, "target": None, "fallback": None, "release": None,
                "outcome": None, "gate": None, "steps": 0}
    return dict(doc)


def transition(ctx: Context, doc: dict[str, Any], event: Event, **changes: Any) -> dict[str, Any]:
    state = State(doc["state"])
    return advance(TABLE, state, event, doc, {**changes, "updated_at": time.time()},
                   persist=lambda d: atomic_write_json(ctx.dirs.root / "app.json", d),
                   refused=lambda: AppFlowError("wrong-state", f"cannot {event.value} {ctx.name} "
                                                f"while it is {state.value}: {hint(doc)}"),
                   point="app", on_enter=ctx.on_enter)


def hint(doc: dict[str, Any]) -> str:
    state = State(doc["state"])
    if state in RESTING:
        return "stage a version first"
    if state is S.STAGED:
        return f"{doc.get('target')} is staged; activate or stage another"
    return f"a deployment of {doc.get('target')} is {state.value}; commit or roll it back first"


def drive(ctx: Context, event: Event | None = None, **changes: Any) -> dict[str, Any]:
    """Fire `event` (if any), then run actions until a resting state or a stop."""
    ctx.dirs.root.mkdir(parents=True, exist_ok=True)
    doc = read(ctx.layout, ctx.name)
    if event is not None:
        doc = transition(ctx, doc, event, **changes)
    for _ in range(MAX_STEPS):
        state = State(doc["state"])
        handler = HANDLERS.get(state)
        step = handler(ctx, doc) if handler and state not in ctx.stop_at else None
        if step is None:
            return doc
        crash_point(f"app-{state.value}-done")
        doc = transition(ctx, doc, step[0], **step[1])
    raise AppFlowError("loop", f"the flow of {ctx.name} went round {MAX_STEPS} times")


def settle(ctx: Context) -> dict[str, Any]:
    """Finish an action a killed command left (stage, switch, commit, roll back)."""
    quiet = Context(ctx.layout, ctx.name, frozenset(State) - SELF_FINISHING)
    return drive(quiet)


def rollback_changes(doc: dict[str, Any], reason: str) -> dict[str, Any]:
    """The `rollback` event's fields: back to the committed version, or from a committed
    one to the version before it."""
    done = State(doc["state"]) is S.DONE
    return {"fallback": doc.get("previous") if done else doc.get("committed"),
            "outcome": {"code": "rollback", "reason": reason, "in": doc["state"]}}


def thresholds(ctx: Context, doc: dict[str, Any]) -> dict[str, float]:
    base = settings.load(ctx.layout)["health"]
    release = doc.get("release") or {}
    merged = settings.health(release.get("health") or {}, "release health", base)
    return settings.health(ctx.health, "command line", merged)


# ------------------------------------------------------------------------- actions


def _staging(ctx: Context, doc: dict[str, Any]) -> Step:
    release = parse(doc["release"], str(ctx.dirs.root / "app.json"))
    store = BlobStore(ctx.layout)
    missing = versions.missing_blobs(store, release)
    if missing:
        return Event.FAILED, {"outcome": {
            "code": "missing-blobs", "in": "staging", "missing": missing,
            "reason": f"{len(missing)} blob(s) of {release.version} are not on the device "
                      f"(first {missing[0][:12]}); send them (`fleet-agent blobs put`), then "
                      "stage again"}}
    versions.materialise(ctx.dirs, store, release)
    return Event.STAGED, {"outcome": None}


def _activating(ctx: Context, doc: dict[str, Any]) -> Step:
    versions.switch(ctx.dirs, doc["target"])
    return Event.ACTIVATED, {"activated_at": time.time()}


def _checking(ctx: Context, doc: dict[str, Any]) -> Step:
    if ctx.force:
        return Event.HEALTHY, {"gate": {"ok": True, "forced": True, "at": time.time()}}
    verdict = gate.check(ctx.layout, ctx.name, doc["target"], thresholds(ctx, doc))
    if verdict["ok"]:
        return Event.HEALTHY, {"gate": verdict}
    return Event.UNHEALTHY, {"gate": verdict, "fallback": doc.get("committed"), "outcome": {
        "code": verdict["code"], "reason": verdict["reason"], "in": "checking"}}


def _committing(ctx: Context, doc: dict[str, Any]) -> Step:
    target, committed = doc["target"], doc.get("committed")
    previous = committed if committed != target else doc.get("previous")
    keep = settings.load(ctx.layout)["keep_versions"]
    kept = [target, previous][:keep] if keep > 1 else [target]
    pruned = versions.prune(ctx.dirs, kept + _older_kept(ctx, kept, keep))
    return Event.COMMITTED, {"committed": target, "previous": previous, "release": None,
                             "pruned": pruned, "outcome": {"code": "ok", "reason": "",
                                                           "in": "committing"}}


def _older_kept(ctx: Context, kept: list[str | None], keep: int) -> list[str | None]:
    """Versions beyond the two named ones, newest first by directory time, up to `keep`."""
    others = [v for v in ctx.dirs.staged_versions() if v not in kept]
    others.sort(key=lambda v: ctx.dirs.version(v).stat().st_mtime, reverse=True)
    return list(others[: max(keep - 2, 0)])


def _rolling_back(ctx: Context, doc: dict[str, Any]) -> Step:
    fallback = doc.get("fallback")
    versions.switch(ctx.dirs, fallback)
    outcome = {**(doc.get("outcome") or {}), "rolled_back": True, "to": fallback,
               "from": doc.get("target")}
    changes: dict[str, Any] = {"outcome": outcome, "release": None}
    if fallback is not None and fallback != doc.get("committed"):
        changes.update(committed=fallback, previous=None)  # an operator's step back
    return Event.ROLLED_BACK, changes


HANDLERS: dict[State, Callable[[Context, dict[str, Any]], Step | None]] = {
    S.STAGING: _staging, S.ACTIVATING: _activating, S.CHECKING: _checking,
    S.COMMITTING: _committing, S.ROLLING_BACK: _rolling_back,
}


def status(layout: Layout, name: str) -> dict[str, Any]:
    """What `app list` shows for one app (read-only)."""
    doc = read(layout, name)
    dirs = AppDirs(layout, name)
    outcome = doc.get("outcome") or {}
    return {"name": name, "state": doc["state"], "current": dirs.current_version(),
            "committed": doc.get("committed"), "previous": doc.get("previous"),
            "target": doc.get("target"), "versions": dirs.staged_versions(),
            "reason": outcome.get("reason") or None, "outcome": doc.get("outcome"),
            "gate": doc.get("gate"), "updated_at": doc.get("updated_at")}
