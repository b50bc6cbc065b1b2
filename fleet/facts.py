"""What a device says about itself, typed: the read half of every operation.

``fleet/agent.py`` asks the agent and builds these from its answers (the only
place that knows the protocol); decisions (``fleet.decisions``) and reports read
them and never a raw answer. Each fact is frozen, so a decision made from
facts is a pure function of them: tests feed recorded answers in and check the
decision that comes out.

>>> slots = Slots.from_answer(recorded["slots"])          # doctest: +SKIP
>>> slots.state, slots.committed_version                  # doctest: +SKIP
('idle', '1.0.0')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class Info:
    """`fleet-agent info`: who the device is and what it runs."""

    name: str | None
    hardware: str | None
    arch: str | None
    software: str
    slot: str | None = None
    serial: str | None = None
    site: str | None = None
    agent_version: str | None = None
    answer: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any]) -> Info:
        return cls(name=_text(answer.get("name")), hardware=_text(answer.get("hardware")),
                   arch=_text(answer.get("arch")), software=str(answer.get("software")),
                   slot=_text(answer.get("slot")), serial=_text(answer.get("serial")),
                   site=_text(answer.get("site")), agent_version=_text(answer.get("agent_version")),
                   answer=dict(answer))


@dataclass(frozen=True)
class Slot:
    """One A/B slot as the device records it."""

    version: str | None = None
    status: str | None = None
    manifest_sha256: str | None = None
    reason: str | None = None

    @classmethod
    def from_answer(cls, record: Any) -> Slot:
        record = record if isinstance(record, Mapping) else {}
        return cls(version=_text(record.get("version")), status=_text(record.get("status")),
                   manifest_sha256=_text(record.get("manifest_sha256")),
                   reason=_text(record.get("reason")))


@dataclass(frozen=True)
class SelfTest:
    slot: str | None
    ok: bool | None  # None: the record does not say
    reason: str | None = None


HELD = ("installed", "activated", "trial")  # states in which a slot may hold a target


@dataclass(frozen=True)
class Slots:
    """`fleet-agent slots`: the A/B state machine, each slot, the last self-test, identity.

    ``verify`` is set when asked with ``--verify``: slot -> problems (empty = intact)."""

    state: str
    active: str
    committed_slot: str
    software: str
    boots: int = 0
    pending: str | None = None
    trials_left: int = 0
    slots: Mapping[str, Slot] = field(default_factory=dict)
    selftest: SelfTest | None = None
    incoming: str = ""
    hardware: str | None = None
    arch: str | None = None
    last_error: str | None = None
    verify: Mapping[str, tuple[str, ...]] | None = None
    answer: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any]) -> Slots:
        device = answer.get("device") or {}
        test = answer.get("selftest") or None
        verify = answer.get("verify")
        return cls(
            state=str(answer["state"]), active=str(answer["active"]),
            committed_slot=str(answer["committed_slot"]), software=str(answer["software"]),
            boots=int(answer.get("boots") or 0), pending=_text(answer.get("pending")),
            trials_left=int(answer.get("trials_left") or 0),
            slots={str(k): Slot.from_answer(v) for k, v in (answer.get("slots") or {}).items()
                   if v},  # an empty slot (null) has no record
            selftest=_selftest(test),
            incoming=str(answer.get("incoming") or ""), hardware=_text(device.get("hardware")),
            arch=_text(device.get("arch")), last_error=_text(answer.get("last_error")),
            verify=None if verify is None else {str(k): tuple(map(str, v))
                                                for k, v in verify.items()},
            answer=dict(answer))

    @property
    def committed_version(self) -> str | None:
        """The version anti-rollback protects (the committed slot's)."""
        return self.slots.get(self.committed_slot, Slot()).version

    def holding(self, digest: str) -> str | None:
        """The slot an interrupted install left holding the bundle with manifest hash
        `digest`, in a state an update can continue from; None when it must install."""
        if self.state not in HELD:
            return None
        slot = {"installed": "b" if self.active == "a" else "a", "activated": self.pending,
                "trial": self.active}[self.state]
        held = self.slots.get(slot or "")
        return slot if held is not None and held.manifest_sha256 == digest else None

    def fell_back_from(self, digest: str, reason: str) -> str | None:
        """The inactive slot that held `digest` and failed with `reason` (a fallback), or None."""
        for name, record in self.slots.items():
            if (name != self.active and record.manifest_sha256 == digest
                    and record.status == "failed" and record.reason == reason):
                return name
        return None


def _selftest(test: Any) -> SelfTest | None:
    if not isinstance(test, Mapping) or not test:
        return None
    ok = test.get("ok")
    return SelfTest(_text(test.get("slot")), None if ok is None else bool(ok),
                    _text(test.get("reason")))


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    reason: str = ""


@dataclass(frozen=True)
class Health:
    """`fleet-agent health`: the verdict, why, the version running and every check."""

    verdict: str
    software: str | None
    reason: str = ""
    slot: str | None = None
    checks: tuple[Check, ...] = ()
    answer: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any]) -> Health:
        checks = tuple(Check(str(c.get("name")), str(c.get("status")), str(c.get("reason") or ""))
                       for c in answer.get("checks") or [] if isinstance(c, Mapping))
        return cls(verdict=str(answer.get("verdict")), software=_text(answer.get("software")),
                   reason=str(answer.get("reason") or ""), slot=_text(answer.get("slot")),
                   checks=checks, answer=dict(answer))

    @property
    def apps(self) -> Apps:
        return Apps.from_answer(self.answer.get("checks")) if self.answer \
            else Apps.from_checks(self.checks)


@dataclass(frozen=True)
class App:
    """One application on a device: the health check's verdict, and for a deployed one its
    version, flow state, frames per second and camera streams (name -> connected)."""

    name: str
    status: str  # ok | warn | fail, as the health check says
    reason: str = ""
    version: str | None = None
    state: str | None = None
    fps: float | None = None
    cameras: Mapping[str, bool] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "state": self.state,
                "fps": self.fps, "cameras": dict(self.cameras), "status": self.status,
                "reason": self.reason}


@dataclass(frozen=True)
class Apps:
    """The applications the device runs, from its health checks (``app:NAME``, and
    ``cameras:NAME`` for the streams)."""

    apps: Mapping[str, App] = field(default_factory=dict)

    @classmethod
    def from_checks(cls, checks: tuple[Check, ...]) -> Apps:
        found = {c.name.partition(":")[2]: App(c.name.partition(":")[2], c.status, c.reason)
                 for c in checks if c.name.startswith("app:")}
        return cls(found)

    @classmethod
    def from_answer(cls, checks: Any) -> Apps:
        """From the raw checks of a health answer (their extra fields included)."""
        raw = [c for c in checks or [] if isinstance(c, Mapping)]
        streams = {str(c.get("name", "")).partition(":")[2]: c.get("streams") or {}
                   for c in raw if str(c.get("name", "")).startswith("cameras:")}
        found = {}
        for c in raw:
            kind, _, name = str(c.get("name", "")).partition(":")
            if kind != "app":
                continue
            cams = streams.get(name) if isinstance(streams.get(name), Mapping) else {}
            fps = c.get("fps")
            found[name] = App(name, str(c.get("status")), str(c.get("reason") or ""),
                              _text(c.get("version")), _text(c.get("state")),
                              float(fps) if isinstance(fps, int | float) else None,
                              {str(k): bool(isinstance(v, Mapping) and v.get("connected"))
                               for k, v in (cams or {}).items()})
        return cls(found)

    def names(self) -> list[str]:
        return sorted(self.apps)


# States in which the device is in the middle of a deploy of its ``target`` (app flow).
APP_BUSY = ("staging", "activating", "checking", "committing", "rolling-back")
# States past which a deploy of the same target continues instead of staging again.
APP_STAGED = ("staged", "activating", "checking", "committing")


@dataclass(frozen=True)
class DeployedApp:
    """One application as `fleet-agent app list` reports it (its persisted flow)."""

    name: str
    state: str  # idle | staging | staged | activating | checking | committing | done | ...
    current: str | None = None
    committed: str | None = None
    previous: str | None = None
    target: str | None = None
    versions: tuple[str, ...] = ()
    reason: str | None = None
    running: bool = False  # its supervisor is alive

    @classmethod
    def from_answer(cls, record: Mapping[str, Any]) -> DeployedApp:
        supervisor = record.get("supervisor")
        running = bool(supervisor.get("running")) if isinstance(supervisor, Mapping) else False
        found = record.get("versions")
        return cls(name=str(record.get("name")), state=str(record.get("state") or "idle"),
                   current=_text(record.get("current")), committed=_text(record.get("committed")),
                   previous=_text(record.get("previous")), target=_text(record.get("target")),
                   versions=tuple(str(v) for v in found) if isinstance(found, list) else (),
                   reason=_text(record.get("reason")), running=running)


@dataclass(frozen=True)
class DeployedApps:
    """`fleet-agent app list`: every application on the device by name."""

    apps: Mapping[str, DeployedApp] = field(default_factory=dict)

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any]) -> DeployedApps:
        rows = answer.get("apps")
        found = [DeployedApp.from_answer(r) for r in rows if isinstance(r, Mapping)] \
            if isinstance(rows, list) else []
        return cls({a.name: a for a in found})

    def get(self, name: str) -> DeployedApp | None:
        return self.apps.get(name)


@dataclass(frozen=True)
class Blobs:
    """`fleet-agent blobs have SHA...`: which blobs are stored, partial sizes, free space."""

    have: frozenset[str]
    missing: tuple[str, ...]
    partial: Mapping[str, int]
    free_bytes: int
    reserve_bytes: int

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any]) -> Blobs:
        partial = answer.get("partial")
        return cls(have=frozenset(str(s) for s in answer.get("have") or ()),
                   missing=tuple(str(s) for s in answer.get("missing") or ()),
                   partial={str(k): int(v) for k, v in partial.items()}
                   if isinstance(partial, Mapping) else {},
                   free_bytes=int(answer.get("free_bytes") or 0),
                   reserve_bytes=int(answer.get("reserve_bytes") or 0))
