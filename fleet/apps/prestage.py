"""Send the next batch's blobs while the current batch holds its health gates.

A rollout event sink (``engine.start(..., sinks=[PreStage(work, nr, n)])``).
Once every device of batch N has begun its health gate (or finished), the
devices of batch N+1 get their missing blobs, at most `concurrency` at a time:
the decision is made (the same `plan_with` the deploy runs, so a refused or
current device gets nothing), then the blobs travel, each hashed by the device
on arrival (fleet/apps/send.py). Nothing else happens early: a blob in the
device's content-addressed store changes nothing that runs (the app's flow,
its versions and its current version are untouched until the device's own
turn), so the rollout's semantics hold: no device of batch N+1 stages,
switches or restarts anything before batch N has passed its gates. When the
device's turn comes, `AppWork.deploy` waits for its early send, decides again
from the device's facts and finds nothing (or only what failed) left to send.

A batch with a failed (or skipped, or not run) device sends nothing ahead: the
rollout may stop there. If it stops later (an abort, a pause), devices of the next
batch may hold the version's blobs without it being staged; the next deploy of
that version sends nothing for them, and `fleet-agent blobs gc` collects blobs
no version uses once their grace has passed. `fleet app deploy --no-prestage`
turns it off.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from nornir.core import Nornir
from nornir.core.inventory import Host

from fleet.agent import Agent
from fleet.apps.send import send_blobs
from fleet.rollout.report import SUCCEEDED, UNCHANGED
from fleet.transport import CONNECTION_NAME

if TYPE_CHECKING:
    from fleet.apps.work import AppWork

log = logging.getLogger(__name__)
STEP = "sending ahead"  # the progress step of an early send (display only)


class PreStage:
    """The event sink; `wait(host)` blocks until that device's early send (if any) ended."""

    def __init__(self, work: AppWork, nr: Nornir, concurrency: int) -> None:
        self.work, self.nr = work, nr
        self.pool = ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="prestage")
        self.batches: list[list[str]] = []
        self.waiting: set[str] = set()  # devices of the current batch not yet in their gate
        self.next = 0  # the batch (index) whose blobs are sent once `waiting` empties
        self.futures: dict[str, Future[None]] = {}
        self.lock = threading.Lock()
        self.closed = False

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "planned":
            self.batches = [list(b) for b in event.get("batches") or []]
        elif kind == "batch_started":
            number = int(event["batch"])
            with self.lock:
                self.waiting, self.next = set(event.get("devices") or ()), number
        elif kind == "device_step" and event.get("step") == "health_check":
            self._passed(str(event.get("device")))
        elif kind == "device_finished":
            if event.get("outcome") not in (SUCCEEDED, UNCHANGED):
                # A failure may stop the rollout (its thresholds): the next batch then
                # sends at its own turn, if it comes.
                with self.lock:
                    self.next = len(self.batches)
            self._passed(str(event.get("device")))
        elif kind == "run_finished":
            self.close()

    def _passed(self, device: str) -> None:
        with self.lock:
            if device not in self.waiting:
                return
            self.waiting.discard(device)
            if self.waiting or self.closed or self.next >= len(self.batches):
                return
            for name in self.batches[self.next]:
                host = self.nr.inventory.hosts.get(name)
                if host is not None and name not in self.futures:
                    self.futures[name] = self.pool.submit(self._send, host)

    def _send(self, host: Host) -> None:
        """The device's missing blobs, decided as the deploy decides (errors are left for
        the device's own turn, which decides and sends again)."""
        try:
            session = host.get_connection(CONNECTION_NAME, self.nr.config)
            agent = Agent(session, host.name, str(host.get("agent", "fleet-agent")))
            plan, target, config = self.work.plan_with(agent, host)
            if plan.state != "change" or plan.resume_from is not None or not plan.send:
                return
            self.work.decided.pop(host.name, None)  # stale once the blobs are there
            progress = self.work.progress

            def sent(done: int) -> None:
                if progress is not None:
                    progress(host.name, STEP, {"done": done, "total": plan.send_bytes})

            send_blobs(agent, session, self.work.source, plan.send, on_bytes=sent)
            self.work.remember(host.name, (replace(plan, send=(), send_bytes=0), target, config))
        except Exception as exc:  # noqa: BLE001 - never the device's failure: its turn decides
            log.info("%s: early send stopped (%s); its turn sends what is missing",
                     host.name, exc)

    def wait(self, host: Host) -> None:
        with self.lock:
            future = self.futures.get(host.name)
        if future is not None:
            future.result()

    def close(self) -> None:
        """No new early sends; those under way end (nothing waits on them any more)."""
        with self.lock:
            self.closed = True
        self.pool.shutdown(wait=True, cancel_futures=True)
