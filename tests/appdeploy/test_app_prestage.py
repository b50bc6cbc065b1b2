"""`PreStage`: the next batch's blobs go out only once every device of the current batch holds
its health gate (or has finished), at most `concurrency` devices at a time, and never after the
rollout has finished. Driven by the rollout's own events; the send itself is recorded."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from nornir.core.inventory import Host

from fleet.apps.prestage import PreStage

BATCHES = [["a"], ["b", "c"], ["d", "e", "f"]]


class Recorded(PreStage):
    def __init__(self, concurrency: int = 10) -> None:
        hosts = {n: Host(n) for batch in BATCHES for n in batch}
        super().__init__(None, SimpleNamespace(inventory=SimpleNamespace(hosts=hosts)),  # type: ignore[arg-type]
                         concurrency)
        self.sent: list[str] = []
        self.gate = threading.Event()
        self.running = 0
        self.most = 0
        self.count_lock = threading.Lock()

    def _send(self, host: Host) -> None:
        with self.count_lock:
            self.running += 1
            self.most = max(self.most, self.running)
        self.gate.wait(30)
        with self.count_lock:
            self.running -= 1
            self.sent.append(host.name)


def events(sink: PreStage, *evs: dict[str, Any]) -> None:
    for e in evs:
        sink(e)


def step(device: str, name: str = "health_check") -> dict[str, Any]:
    return {"event": "device_step", "device": device, "step": name}


def test_the_next_batch_is_sent_only_once_the_whole_batch_holds_its_gates() -> None:
    sink = Recorded(concurrency=2)
    events(sink, {"event": "planned", "batches": BATCHES},
           {"event": "batch_started", "batch": 1, "devices": ["a"]},
           step("a", "sending"), step("a", "staged"))
    assert not sink.futures  # batch 1 is still sending: nothing for batch 2 yet
    events(sink, step("a"))
    assert set(sink.futures) == {"b", "c"}
    events(sink, {"event": "batch_started", "batch": 2, "devices": ["b", "c"]}, step("b"))
    assert set(sink.futures) == {"b", "c"}  # c has not reached its gate
    events(sink, {"event": "device_finished", "device": "c", "outcome": "succeeded"})
    assert set(sink.futures) == {"b", "c", "d", "e", "f"}
    sink.gate.set()
    for name in "bcdef":
        sink.wait(sink.nr.inventory.hosts[name])
    assert sorted(sink.sent) == ["b", "c", "d", "e", "f"]
    assert sink.most <= 2  # never more devices at once than the rollout's concurrency
    sink.close()


def test_nothing_is_sent_after_the_rollout_finished() -> None:
    sink = Recorded()
    sink.gate.set()
    events(sink, {"event": "planned", "batches": BATCHES},
           {"event": "batch_started", "batch": 1, "devices": ["a"]},
           {"event": "run_finished", "status": "stopped", "reason": "canary failed"},
           step("a"))
    assert not sink.futures and not sink.sent
    sink.wait(sink.nr.inventory.hosts["b"])  # a device with no early send does not wait


def test_a_batch_with_a_failed_device_sends_nothing_ahead() -> None:
    """The failure may stop the rollout under its thresholds: the next batch would have got
    its blobs for nothing."""
    sink = Recorded()
    sink.gate.set()
    events(sink, {"event": "planned", "batches": BATCHES},
           {"event": "batch_started", "batch": 1, "devices": ["a"]},
           {"event": "device_finished", "device": "a", "outcome": "failed"})
    assert not sink.futures
    sink.close()
