"""Decisions: what an operation would do to a device, decided from its facts alone.

Every operation is split in two, as pyinfra splits facts from operations: a
pure ``decide(facts, artifact) -> Change | NoChange | Refusal`` and the step
that applies a Change. ``plan`` shows the decision; ``install``/``rollout``
apply it; both call the same function, so a plan never promises what the
apply step refuses. Decisions are data: tests feed recorded agent answers in
(``fleet.facts``) and compare the decision that comes out.

>>> decide_update(Slots.from_answer(answer), manifest)        # doctest: +SKIP
Refusal(reason='refused: wrong-hardware: bundle is for hardware jetson-orin, ...',
        code='wrong-hardware')
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet_runtime import bundle
from fleet_runtime.bundle import BundleError, Manifest

from fleet.facts import Slots


@dataclass(frozen=True)
class Change:
    """The device will change from `before` to `after`. `resume_from` names the slot state
    an interrupted earlier run left the very same artifact in (continue, do not redo)."""

    before: str | None
    after: str
    resume_from: str | None = None


@dataclass(frozen=True)
class NoChange:
    """Already done: the device runs `current`."""

    reason: str
    current: str | None


@dataclass(frozen=True)
class Refusal:
    """The device must not take the artifact; `code` is stable, `reason` says why and what
    to do."""

    reason: str
    code: str


Decision = Change | NoChange | Refusal


def decide_update(slots: Slots, manifest: Manifest) -> Decision:
    """An OTA update of the device whose slot facts are `slots` to the bundle `manifest`.

    Refused: a slot on trial that is not this bundle (or fails its re-hash), and anything
    the device's own guard refuses (hardware, arch, ``min_version``, a downgrade without a
    signed permit; `fleet_runtime.bundle.check_compatible`, the same function the device
    runs). No change: idle on the target. Otherwise a change, continued from a slot an
    interrupted run left holding this bundle when its files re-hash intact."""
    resume_from, problems = _held(slots, manifest)
    if slots.state == "trial" and resume_from is None:
        damaged = f" and fails its re-hash ({problems[0]})" if problems else ""
        return Refusal(f"slot {slots.active} is already on trial{damaged}; commit or roll it "
                       "back first (`fleet-agent commit|rollback`)", "trial-pending")
    try:
        bundle.check_compatible(manifest, hardware=str(slots.hardware), arch=str(slots.arch),
                                current=slots.software, committed=slots.committed_version)
    except BundleError as exc:
        return Refusal(f"refused: {exc.code}: {exc.message}", exc.code)
    before = slots.committed_version or slots.software
    if slots.software == manifest.version and slots.state == "idle":
        return NoChange("already at the target version", before)
    return Change(before, manifest.version, resume_from)


def _held(slots: Slots, manifest: Manifest) -> tuple[str | None, tuple[str, ...]]:
    """(the state to resume from, or None; the held slot's re-hash problems)."""
    slot = slots.holding(manifest.digest)
    if slot is None:
        return None, ()
    problems = (slots.verify or {}).get(slot, ("not verified",))
    return (None if problems else slots.state), tuple(problems)
