"""The latest health of each device, and a short history, fed by the domain's sweeps.

`fleet serve` runs `fleet.health.sweep` (SSH) or `fleet.heartbeats.sweep`
(MQTT heartbeats) every ``--health-every`` seconds on a background thread and
keeps what they return here; the console never judges health itself.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fleet.health import DeviceHealth

HISTORY = 20


@dataclass
class Reading:
    at: float
    health: DeviceHealth

    def apps(self) -> list[dict[str, Any]]:
        return [c for c in self.health.checks if str(c.get("name", "")).startswith("app:")]


class HealthBoard:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._history: dict[str, deque[Reading]] = {}
        self.version = 0  # bumped on every sweep: caches keyed on it know to refresh
        self.last_sweep: float | None = None
        self.last_error = ""

    def record(self, reports: list[DeviceHealth], at: float | None = None) -> None:
        moment = time.time() if at is None else at
        with self._lock:
            for report in reports:
                self._history.setdefault(report.name, deque(maxlen=HISTORY)).append(
                    Reading(moment, report))
            self.version += 1
            self.last_sweep, self.last_error = moment, ""

    def latest(self, name: str) -> Reading | None:
        with self._lock:
            history = self._history.get(name)
            return history[-1] if history else None

    def history(self, name: str) -> list[Reading]:
        with self._lock:
            return list(reversed(self._history.get(name, ())))

    def summary(self) -> dict[str, tuple[str, list[str]]]:
        """Device -> (verdict, applications) from each device's latest reading."""
        with self._lock:
            return {name: (h[-1].health.verdict, [str(c.get("app")) for c in h[-1].apps()])
                    for name, h in self._history.items() if h}


class Poller(threading.Thread):
    """Calls `sweep()` now and every `every` seconds until stopped; errors are kept, not raised."""

    def __init__(self, board: HealthBoard, sweep: Callable[[], list[DeviceHealth]],
                 every: float) -> None:
        super().__init__(name="console-health", daemon=True)
        self.board, self.sweep, self.every = board, sweep, every
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.board.record(self.sweep())
            except Exception as exc:  # noqa: BLE001 - shown on the overview; the next round retries
                from fleet.console.remote import describe_error

                self.board.last_error = describe_error(exc)  # no user:password@ of a URL
            self.stopping.wait(self.every)
