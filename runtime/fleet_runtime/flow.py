"""The device-side update flow: one ``(state, event) -> state`` table, persisted before acting.

Above the slot state machine (``slots.py``: the A/B verbs and ``boot.json``),
this table carries one update from its start to its outcome, whoever drives it:

* push: the controller runs ``fleet-agent install --activate``, reboots the
  device (``boot`` fires ``booted``) and runs ``commit`` or ``rollback``; each
  command fires its event and runs the flow until it reaches a state that waits
  for the controller (``Context.stop_at``);
* pull: the IoT Jobs handler fires ``download`` and runs the flow to its end,
  rebooting the device itself (``labhooks.reboot``), resuming after the boot.

Both pass the same gate, ``checking``: the booted slot's self-test and the
agent's own health verdict (``failing`` fails it, as in the controller's
rollout gate) decide ``healthy`` (commit) or ``unhealthy`` (roll back)::

    idle/done/failed --download--> downloading --downloaded--> verifying --verified--+
    idle/done/failed --install------------------------------------------------------> installing
    installing --installed--> installed --activate--> activating --activated--> activated
    activated --reboot--> rebooting --booted--> checking      (push: activated --booted-->)
    checking --healthy--> committing --committed--> done
    checking --unhealthy--> rolling-back --rolled-back--> restoring --booted--> failed

The state is written to ``var/lib/fleet/flow.json`` atomically (temp, fsync,
rename, fsync dir) *before* the state's action runs, and every action is safe to
run again, so a kill at any instant resumes where it stopped. Each handler
works out its event from the device's facts (the slot state, the boot counter)
and never picks its successor. ``crash_point("flow-<state>")`` (entered, action
not yet run) and ``"flow-<state>-done"`` (action run, next state not yet
written) are the power-loss suite's kill points.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from fleet_runtime import bundle, labhooks, slots
from fleet_runtime.agent.gate import check
from fleet_runtime.bundle import BundleError
from fleet_runtime.layout import Layout, atomic_write_json, read_json
from fleet_runtime.slots import crash_point

FORMAT = 1
DOWNLOAD_TIMEOUT_S = 60.0
MAX_STEPS = 64  # transitions in one drive: far more than one update takes, so a loop is a bug


class State(str, Enum):
    IDLE = "idle"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    INSTALLING = "installing"
    INSTALLED = "installed"
    ACTIVATING = "activating"
    ACTIVATED = "activated"
    REBOOTING = "rebooting"
    CHECKING = "checking"
    COMMITTING = "committing"
    ROLLING_BACK = "rolling-back"
    RESTORING = "restoring"
    DONE = "done"
    FAILED = "failed"


class Event(str, Enum):
    DOWNLOAD = "download"
    DOWNLOADED = "downloaded"
    VERIFIED = "verified"
    LOST = "lost"  # the downloaded bundle is gone (killed after deleting it): fetch again
    INSTALL = "install"
    INSTALLED = "installed"
    ACTIVATE = "activate"
    ACTIVATED = "activated"
    REBOOT = "reboot"
    BOOTED = "booted"
    FELL_BACK = "fell-back"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    COMMITTED = "committed"
    ROLLBACK = "rollback"
    ROLLED_BACK = "rolled-back"
    FAILED = "failed"


S, E = State, Event
START = (S.IDLE, S.DONE, S.FAILED)
TERMINAL = frozenset(START)
TABLE: dict[tuple[State, Event], State] = {
    **{(s, E.DOWNLOAD): S.DOWNLOADING for s in START},
    **{(s, E.INSTALL): S.INSTALLING for s in START},
    # Push takes over a download nothing was written from, or writes the inactive slot again
    # (the controller runs install again after an interruption, as slots.py allows).
    **{(s, E.INSTALL): S.INSTALLING for s in (S.DOWNLOADING, S.VERIFYING, S.INSTALLING,
                                                S.INSTALLED, S.ACTIVATING, S.ACTIVATED)},
    (S.DOWNLOADING, E.DOWNLOADED): S.VERIFYING,
    (S.DOWNLOADING, E.FAILED): S.FAILED,
    (S.VERIFYING, E.VERIFIED): S.INSTALLING,
    (S.VERIFYING, E.LOST): S.DOWNLOADING,
    (S.VERIFYING, E.FAILED): S.FAILED,
    (S.INSTALLING, E.INSTALLED): S.INSTALLED,
    (S.INSTALLING, E.LOST): S.DOWNLOADING,
    (S.INSTALLING, E.FAILED): S.FAILED,
    (S.INSTALLED, E.ACTIVATE): S.ACTIVATING,
    (S.ACTIVATED, E.ACTIVATE): S.ACTIVATING,
    (S.ACTIVATING, E.ACTIVATE): S.ACTIVATING,
    (S.ACTIVATING, E.ACTIVATED): S.ACTIVATED,
    (S.ACTIVATING, E.FAILED): S.FAILED,
    (S.ACTIVATED, E.REBOOT): S.REBOOTING,
    (S.ACTIVATED, E.BOOTED): S.CHECKING,  # push: the controller rebooted it
    (S.ACTIVATED, E.FELL_BACK): S.FAILED,
    (S.REBOOTING, E.BOOTED): S.CHECKING,
    (S.REBOOTING, E.FELL_BACK): S.FAILED,
    (S.CHECKING, E.BOOTED): S.CHECKING,  # another trial boot before the gate ran
    (S.CHECKING, E.FELL_BACK): S.FAILED,
    (S.CHECKING, E.HEALTHY): S.COMMITTING,
    (S.CHECKING, E.UNHEALTHY): S.ROLLING_BACK,
    (S.COMMITTING, E.COMMITTED): S.DONE,
    (S.COMMITTING, E.FAILED): S.ROLLING_BACK,
    **{(s, E.ROLLBACK): S.ROLLING_BACK
       for s in (S.INSTALLED, S.ACTIVATED, S.REBOOTING, S.CHECKING)},
    (S.ROLLING_BACK, E.ROLLED_BACK): S.RESTORING,
    (S.RESTORING, E.BOOTED): S.FAILED,
}

# The slot states each flow state can meet; anything else means the slots were moved
# without the flow (a slot verb run by hand, a factory reset): the flow adopts them.
SLOT_STATES: dict[State, set[str]] = {
    S.IDLE: {"idle"}, S.DONE: {"idle"}, S.FAILED: {"idle"},
    S.DOWNLOADING: {"idle", "installed", "activated"},
    S.VERIFYING: {"idle", "installed", "activated"},
    S.INSTALLING: {"idle", "installing", "installed", "activated"},
    S.INSTALLED: {"installed"}, S.ACTIVATING: {"installed", "activated"},
    S.ACTIVATED: {"activated", "trial", "idle"}, S.REBOOTING: {"activated", "trial", "idle"},
    S.CHECKING: {"trial", "idle"}, S.COMMITTING: {"trial", "idle"},
    S.ROLLING_BACK: {"idle", "installed", "activated", "trial"},
    S.RESTORING: {"idle"},
}
ADOPT = {"idle": S.IDLE, "installing": S.INSTALLING, "installed": S.INSTALLED,
         "activated": S.ACTIVATED, "trial": S.CHECKING}
# Where push commands wait for the controller: its reboot, or its commit after its own gate.
PUSH_WAITS = frozenset({S.ACTIVATED, S.CHECKING, S.RESTORING})
# Actions that need nothing from outside (no bundle, no reboot, no verdict): whoever comes
# next finishes one a killed process left half done (`settle`).
SELF_FINISHING = frozenset({S.ACTIVATING, S.COMMITTING, S.ROLLING_BACK})


class FlowError(Exception):
    """An event the table refuses in the current state, or a failed flow (``code`` is stable)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


Step = tuple[Event, dict[str, Any]]


@dataclass
class Context:
    """What one drive of the flow may use; the agent command or the jobs handler builds it."""

    layout: Layout
    stop_at: frozenset[State] = frozenset()  # enter these, but leave their action to a later call
    source: Any = None  # push: the bundle stream `installing` reads (a binary reader)
    on_progress: bundle.Progress | None = None
    trials: int = slots.DEFAULT_TRIALS
    force: bool = False  # commit --force: skip the gate
    health_flags: list[str] | None = None  # thresholds for the gate (None: the settings')
    on_enter: Callable[[dict[str, Any]], None] | None = None  # called after each persist
    answers: dict[str, Any] = field(default_factory=dict)  # what the slot verbs answered
    error: BaseException | None = None  # the exception behind a failed step


# ---------------------------------------------------------------------------- the file


def path(layout: Layout) -> Path:
    return layout.state / "flow.json"


def read(layout: Layout) -> dict[str, Any]:
    """The persisted flow; a device that never ran one is derived from its slot state."""
    doc = read_json(path(layout), default=None)
    if doc is None:
        return {"format": FORMAT, "state": ADOPT[slots.read_state(layout)["state"]].value,
                "mode": None, "job": None, "target": None, "download": None, "boots": None,
                "outcome": None, "steps": 0}
    return dict(doc)


def _persist(layout: Layout, doc: dict[str, Any]) -> None:
    doc["updated_at"] = time.time()
    atomic_write_json(path(layout), doc)


def advance(table: Mapping[tuple[Any, Any], Enum], state: Enum, event: Enum,
            doc: dict[str, Any], changes: dict[str, Any], *,
            persist: Callable[[dict[str, Any]], None], refused: Callable[[], Exception],
            point: str, on_enter: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    """One move of a persisted flow table (the update flow's, an application's): refuse
    what the table does not allow, write the new state before anything acts on it, cross
    its crash point, then tell the driver's owner."""
    nxt = table.get((state, event))
    if nxt is None:
        raise refused()
    doc.update(changes, state=nxt.value, steps=int(doc.get("steps") or 0) + 1)
    persist(doc)
    crash_point(f"{point}-{nxt.value}")
    if on_enter is not None:
        on_enter(doc)
    return doc


def transition(ctx: Context, doc: dict[str, Any], event: Event, **changes: Any) -> dict[str, Any]:
    """Move by the table (refusing anything else), persist, then tell the driver's owner."""
    state = State(doc["state"])
    return advance(TABLE, state, event, doc, changes,
                   persist=lambda d: _persist(ctx.layout, d),
                   refused=lambda: FlowError("wrong-state", f"cannot {event.value} while the "
                                             f"update flow is {state.value}: {hint(doc)}"),
                   point="flow", on_enter=ctx.on_enter)


def hint(doc: dict[str, Any]) -> str:
    state = State(doc["state"])
    if state in TERMINAL:
        return "start an update first"
    if state in (S.CHECKING, S.COMMITTING):
        return "the new slot is on trial; commit or rollback first"
    if state is S.RESTORING:
        return "rolled back; reboot to run the committed slot"
    return f"an update is {state.value}; finish it or roll it back first"


def reconcile(ctx: Context, doc: dict[str, Any]) -> dict[str, Any]:
    """Adopt the slot state when the slots were moved without the flow."""
    slot_state = slots.read_state(ctx.layout)["state"]
    if slot_state in SLOT_STATES[State(doc["state"])]:
        return doc
    doc.update(state=ADOPT[slot_state].value, mode="adopted", job=None, download=None,
               outcome=None, boots=None, target=_slot_target(ctx.layout))
    _persist(ctx.layout, doc)
    return doc


# ---------------------------------------------------------------------------- the driver


def drive(ctx: Context, event: Event | None = None, **changes: Any) -> dict[str, Any]:
    """Fire `event` (if any), then run state actions until a stop state or a wait."""
    doc = reconcile(ctx, read(ctx.layout))
    if event is not None:
        doc = transition(ctx, doc, event, **changes)
    for _ in range(MAX_STEPS):
        state = State(doc["state"])
        step = HANDLERS[state](ctx, doc) if state in HANDLERS and state not in ctx.stop_at \
            else None
        if step is None:
            return doc
        crash_point(f"flow-{state.value}-done")
        doc = transition(ctx, doc, step[0], **step[1])
    raise FlowError("loop", f"the update flow went round {MAX_STEPS} times, now "
                    f"{doc['state']}; see {path(ctx.layout)}")


def settle(ctx: Context) -> dict[str, Any]:
    """Finish a self-finishing action a killed process left (activate, commit, roll back),
    and record a fallback the slots already made; run by every push command and by `boot`,
    before the slot choice."""
    quiet = Context(ctx.layout, frozenset(State) - SELF_FINISHING, trials=ctx.trials)
    doc = drive(quiet)
    if State(doc["state"]) in (S.ACTIVATED, S.REBOOTING, S.CHECKING) and \
            slots.read_state(ctx.layout)["state"] == "idle":
        outcome = _boot_outcome(ctx.layout, doc)
        if outcome is not None and outcome[0] is Event.FELL_BACK:
            doc = transition(quiet, doc, outcome[0], **outcome[1])
    return doc


def start_changes(mode: str, **fields: Any) -> dict[str, Any]:
    """The fields a new update starts with (the previous one's are dropped)."""
    return {"mode": mode, "job": None, "target": None, "download": None, "boots": None,
            "outcome": None, "steps": 0, "started_at": time.time(), **fields}


def on_boot(ctx: Context) -> dict[str, Any]:
    """What `fleet-agent boot` tells the flow after the slot choice: booted, or fell back."""
    doc = reconcile(ctx, read(ctx.layout))
    state = State(doc["state"])
    if state not in (S.ACTIVATED, S.REBOOTING, S.CHECKING, S.RESTORING):
        return doc
    event, changes = _boot_outcome(ctx.layout, doc) or (Event.BOOTED, {})
    return transition(ctx, doc, event, **changes)


def failure(doc: dict[str, Any]) -> FlowError | None:
    """The flow's failure as an error to raise (None unless it failed or is restoring)."""
    if State(doc["state"]) not in (S.FAILED, S.RESTORING, S.ROLLING_BACK):
        return None
    outcome = doc.get("outcome") or {}
    return FlowError(str(outcome.get("code", "failed")), reason(doc))


def reason(doc: dict[str, Any]) -> str:
    outcome = doc.get("outcome") or {}
    text = str(outcome.get("reason", ""))
    return f"rolled back: {text}" if outcome.get("rolled_back") else text


# ---------------------------------------------------------------------------- facts


def _slot_target(layout: Layout) -> dict[str, Any] | None:
    doc = slots.read_state(layout)
    slot = {"installed": slots.other(doc["active"]), "activated": doc["pending"],
            "trial": doc["active"]}.get(doc["state"])
    if slot is None:
        return None
    record = doc["slots"].get(slot) or {}
    return {"slot": slot, "version": record.get("version"),
            "digest": record.get("manifest_sha256")}


def _failed(code: str, message: str, state: State, **extra: Any) -> Step:
    return Event.FAILED, {"outcome": {"code": code, "reason": message, "in": state.value,
                                      **extra}}


def _boot_outcome(layout: Layout, doc: dict[str, Any]) -> Step | None:
    """After a boot: (booted | fell-back) for the target slot; None while not booted yet."""
    sdoc = slots.read_state(layout)
    target = (doc.get("target") or {}).get("slot")
    if sdoc["state"] == "trial" and sdoc["active"] == target:
        return Event.BOOTED, {}
    if sdoc["state"] == "idle":
        committed = sdoc["committed_slot"] == target and \
            slots.software_version(layout) == (doc.get("target") or {}).get("version")
        if committed or State(doc["state"]) is S.RESTORING:
            return Event.BOOTED, {}
        message = f"booted slot {sdoc['active']} ({slots.software_version(layout)}), not " \
                  f"{(doc.get('target') or {}).get('version')}: the device fell back"
        return Event.FELL_BACK, {"outcome": {"code": "fallback", "reason": message,
                                             "in": doc["state"]}}
    return None


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc} ({exc.filename or 'no file'})"
    return str(getattr(exc, "message", exc))


def _boots(layout: Layout) -> int:
    return int(slots.read_state(layout)["boots"])


# ---------------------------------------------------------------------------- actions


def _downloading(ctx: Context, doc: dict[str, Any]) -> Step:
    spec = doc["download"]
    dest = Path(spec["path"])
    url = str(spec.get("url", ""))
    if not url.startswith(("https://", "http://")):
        return _failed("bad-url", "the job's bundle URL is not http(s)", S.DOWNLOADING)
    dest.parent.mkdir(parents=True, exist_ok=True)
    import urllib.request  # here: every slot command imports this module, few download

    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp, \
                dest.open("wb") as out:  # noqa: S310 - scheme checked above
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                out.write(chunk)
    except (OSError, ValueError) as exc:
        dest.unlink(missing_ok=True)
        return _failed("download-failed", f"bundle download failed: {exc}", S.DOWNLOADING)
    return Event.DOWNLOADED, {}


def _verifying(ctx: Context, doc: dict[str, Any]) -> Step:
    spec = doc["download"]
    dest = Path(spec["path"])
    if not dest.exists():
        return Event.LOST, {}
    digest, size = hashlib.sha256(), 0
    with dest.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    if digest.hexdigest() != spec.get("sha256") or size != int(spec.get("size", size)):
        dest.unlink(missing_ok=True)
        return _failed("checksum", "downloaded bundle does not match the job's SHA-256/size; "
                       "refusing to install it", S.VERIFYING)
    return Event.VERIFIED, {}


def _installing(ctx: Context, doc: dict[str, Any]) -> Step | None:
    download = Path(doc["download"]["path"]) if doc.get("download") else None
    if ctx.source is None and download is None:
        return None  # push, cut short: the controller runs install again
    if ctx.source is None and download is not None and not download.exists():
        return Event.LOST, {}
    try:
        if ctx.source is not None:
            answer = slots.install(ctx.layout, ctx.source, on_progress=ctx.on_progress)
        else:
            with open(str(download), "rb") as fh:
                answer = slots.install(ctx.layout, fh, on_progress=ctx.on_progress)
    except (BundleError, slots.SlotError, OSError) as exc:
        ctx.error = exc
        code = getattr(exc, "code", "os-error")
        return _failed(code, _message(exc), S.INSTALLING)
    finally:
        if download is not None:
            download.unlink(missing_ok=True)
    ctx.answers["install"] = answer
    return Event.INSTALLED, {"target": _slot_target(ctx.layout)}


def _installed(ctx: Context, doc: dict[str, Any]) -> Step:
    return Event.ACTIVATE, {}


def _activating(ctx: Context, doc: dict[str, Any]) -> Step:
    try:
        trials = int(doc.get("trials") or ctx.trials)
        ctx.answers["activate"] = slots.activate(ctx.layout, trials)
    except slots.SlotError as exc:
        ctx.error = exc
        return _failed(exc.code, exc.message, S.ACTIVATING)
    return Event.ACTIVATED, {"target": _slot_target(ctx.layout)}


def _activated(ctx: Context, doc: dict[str, Any]) -> Step:
    if slots.read_state(ctx.layout)["state"] != "activated":
        return _boot_outcome(ctx.layout, doc) or (Event.BOOTED, {})
    return Event.REBOOT, {"boots": _boots(ctx.layout)}


def _reboot_then(ctx: Context, doc: dict[str, Any]) -> Step | None:
    """Reboot unless the boot counter says it already happened; the boot's outcome."""
    if _boots(ctx.layout) <= int(doc.get("boots") or 0) and \
            not labhooks.reboot(ctx.layout, boot_in_place):
        return None  # the machine goes down; the flow resumes after the boot
    return _boot_outcome(ctx.layout, doc)


def boot_in_place(layout: Layout) -> dict[str, Any]:
    """A simulated device's reboot: the same boot logic `fleet-agent boot` runs."""
    return slots.boot(layout)


def _checking(ctx: Context, doc: dict[str, Any]) -> Step:
    outcome = _boot_outcome(ctx.layout, doc)
    if outcome is not None and outcome[0] is Event.FELL_BACK:
        return outcome
    if ctx.force:
        return Event.HEALTHY, {"gate": {"forced": True, "at": time.time()}}
    gate = check(ctx.layout, ctx.health_flags)
    if gate["ok"]:
        return Event.HEALTHY, {"gate": gate}
    return Event.UNHEALTHY, {"gate": gate, "outcome": {
        "code": gate["code"], "reason": gate["reason"], "in": S.CHECKING.value}}


def _committing(ctx: Context, doc: dict[str, Any]) -> Step:
    sdoc = slots.read_state(ctx.layout)
    target = doc.get("target") or {}
    if sdoc["state"] == "idle" and sdoc["committed_slot"] != target.get("slot"):
        return _failed("fallback", "the new slot is no longer on trial", S.COMMITTING)
    try:
        ctx.answers["commit"] = slots.commit(ctx.layout, force=True)  # the gate has passed
    except slots.SlotError as exc:
        ctx.error = exc
        return _failed(exc.code, exc.message, S.COMMITTING)
    return Event.COMMITTED, {"outcome": {"code": "ok", "reason": "", "in": "committing"}}


def _rolling_back(ctx: Context, doc: dict[str, Any]) -> Step:
    why = reason(doc) or "rolled back by operator"
    # slots.rollback refuses only `installing`, which SLOT_STATES keeps out of this state.
    ctx.answers["rollback"] = slots.rollback(ctx.layout, why[:300])
    outcome = {"code": "rollback", "reason": why, "in": doc["state"],
               **(doc.get("outcome") or {}), "rolled_back": True}
    return Event.ROLLED_BACK, {"outcome": outcome, "boots": _boots(ctx.layout)}


HANDLERS: dict[State, Callable[[Context, dict[str, Any]], Step | None]] = {
    S.DOWNLOADING: _downloading, S.VERIFYING: _verifying, S.INSTALLING: _installing,
    S.INSTALLED: _installed, S.ACTIVATING: _activating, S.ACTIVATED: _activated,
    S.REBOOTING: _reboot_then, S.CHECKING: _checking, S.COMMITTING: _committing,
    S.ROLLING_BACK: _rolling_back, S.RESTORING: _reboot_then,
}


def summary(layout: Layout) -> dict[str, Any]:
    """The flow for `fleet-agent slots` (read-only)."""
    doc = read(layout)
    keep = ("state", "mode", "job", "target", "outcome", "gate", "updated_at")
    return {k: doc.get(k) for k in keep}
