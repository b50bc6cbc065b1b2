"""Rollout state as a fold over events: the runner builds it live, the journal replays it.

Events are dicts ``{"event": NAME, "t": epoch, ...}``. The same `Report.apply`
serves the running controller and `fleet ota status` reading a journal after
a crash, so both always agree.

>>> r = Report()
>>> r.apply({"event": "planned", "batches": [["a"], ["b"]], "sites": {"a": "x", "b": "y"}})
>>> r.apply({"event": "device_finished", "device": "a", "outcome": "failed", "reason": "boom"})
>>> r.failures(), r.devices["b"].outcome
(1, 'pending')
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

Event = dict[str, Any]

# Per-device outcomes. "done" ones are never touched again by resume.
PENDING, IN_FLIGHT = "pending", "in_flight"
SUCCEEDED, UNCHANGED, FAILED, SKIPPED, NOT_RUN = (
    "succeeded", "unchanged", "failed", "skipped", "not-run")
DONE = frozenset({SUCCEEDED, UNCHANGED, FAILED, SKIPPED})
RETRYABLE = frozenset({FAILED, SKIPPED, NOT_RUN})

# Run statuses. Only the TERMINAL ones release the devices for another rollout.
RUNNING, PAUSED, COMPLETED, STOPPED, ABORTED = (
    "running", "paused", "completed", "stopped", "aborted")
TERMINAL = frozenset({COMPLETED, STOPPED, ABORTED})


@dataclass
class DeviceState:
    name: str
    site: str = "-"
    batch: int = 0
    outcome: str = PENDING
    reason: str = ""
    step: str = ""
    attempts: int = 0
    installs: int = 0
    duration: float = 0.0


@dataclass
class Report:
    """Where a rollout stands: batches, per-device outcome, status and why."""

    id: str = ""
    status: str = RUNNING
    reason: str = ""
    batches: list[list[str]] = field(default_factory=list)
    devices: dict[str, DeviceState] = field(default_factory=dict)
    current_batch: int = 0
    abort_requested: str = ""
    pause_requested: str = ""
    header: dict[str, Any] = field(default_factory=dict)

    def apply(self, event: Event) -> None:
        """Fold one event into the state (unknown events are ignored: forward compatible)."""
        handler = getattr(self, "_on_" + str(event.get("event", "")), None)
        if handler is not None:
            handler(event)

    def _on_rollout(self, e: Event) -> None:
        self.header = {k: v for k, v in e.items() if k not in ("event", "t")}
        self.id = str(e.get("id", ""))

    def _on_planned(self, e: Event) -> None:
        self.batches = [list(b) for b in e["batches"]]
        sites = e.get("sites", {})
        for number, batch in enumerate(self.batches, start=1):
            for name in batch:
                state = self.devices.setdefault(name, DeviceState(name))
                state.site, state.batch = sites.get(name, state.site), number

    def _on_batch_started(self, e: Event) -> None:
        self.current_batch = int(e["batch"])
        self.status = RUNNING

    def _on_device_started(self, e: Event) -> None:
        dev = self.device(e["device"])
        dev.outcome, dev.reason, dev.attempts = IN_FLIGHT, "", dev.attempts + 1

    def _on_device_step(self, e: Event) -> None:
        self.device(e["device"]).step = str(e.get("step", ""))

    def _on_device_installing(self, e: Event) -> None:
        self.device(e["device"]).installs += 1

    def _on_device_finished(self, e: Event) -> None:
        dev = self.device(e["device"])
        dev.outcome, dev.reason = str(e["outcome"]), str(e.get("reason", ""))
        dev.duration, dev.step = float(e.get("duration", 0.0)), ""

    def _on_device_late(self, e: Event) -> None:
        dev = self.device(e["device"])
        dev.reason = f"{dev.reason}; finished later: {e['outcome']} {e.get('reason', '')}".strip()

    def _on_run_finished(self, e: Event) -> None:
        self.status, self.reason = str(e["status"]), str(e.get("reason", ""))
        self.pause_requested = ""

    def _on_abort_requested(self, e: Event) -> None:
        self.abort_requested = str(e.get("reason") or "abort requested")

    def _on_pause_requested(self, e: Event) -> None:
        self.pause_requested = str(e.get("reason") or "pause requested")

    def _on_resumed(self, e: Event) -> None:
        self.status, self.reason, self.pause_requested = RUNNING, "", ""

    def _on_retry(self, e: Event) -> None:
        self._on_planned(e)
        for name in e["devices"]:
            dev = self.device(name)
            dev.outcome, dev.reason = PENDING, ""
        self.status, self.reason, self.abort_requested = RUNNING, "", ""

    def device(self, name: str) -> DeviceState:
        return self.devices.setdefault(name, DeviceState(name))

    def failures(self, names: list[str] | None = None) -> int:
        chosen = self.devices if names is None else {n: self.device(n) for n in names}
        return sum(1 for d in chosen.values() if d.outcome == FAILED)

    def counts(self) -> dict[str, int]:
        return dict(Counter(d.outcome for d in self.devices.values()))

    def by_site(self) -> dict[str, dict[str, int]]:
        """{site: {outcome: count}} for the summary table."""
        out: dict[str, Counter[str]] = {}
        for dev in self.devices.values():
            out.setdefault(dev.site, Counter())[dev.outcome] += 1
        return {site: dict(c) for site, c in sorted(out.items())}

    def with_outcome(self, *outcomes: str) -> list[str]:
        return [d.name for d in self.devices.values() if d.outcome in outcomes]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "status": self.status, "reason": self.reason,
            "batches": self.batches, "current_batch": self.current_batch,
            "counts": self.counts(), "by_site": self.by_site(),
            "devices": [asdict(d) for _, d in sorted(self.devices.items())],
            "header": self.header,
        }


def replay(events: list[Event]) -> Report:
    report = Report()
    for event in events:
        report.apply(event)
    return report
