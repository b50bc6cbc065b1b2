"""RolloutRunner: a Nornir runner plugin that runs any task batch by batch under a Policy.

It is generic: the task is whatever the caller passes to ``nr.run`` (an OTA
install, an application deployment). Around it the runner adds what Nornir
lacks: batches with Ansible `serial` semantics, a global and per-site
concurrency limit, an offline policy, a per-device timeout, failure thresholds,
pause, cooperative abort and a health gate. Every state change is an event
(see report.py) handed to ``on_event`` (the journal, the progress display).
A device's failure is a failed Result in the returned AggregatedResult, never
an exception.

>>> runner = RolloutRunner(Policy(batches=(1, "50%")), gate=version_gate)  # doctest: +SKIP
>>> result = nr.with_runner(runner).run(task=install_bundle, bundle_path=path)  # doctest: +SKIP
>>> runner.report.status                                                # doctest: +SKIP
'completed'
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nornir.core.exceptions import NornirSubTaskError
from nornir.core.inventory import Host
from nornir.core.processor import Processors
from nornir.core.task import AggregatedResult, MultiResult, Result, Task

from fleet.rollout import batches as batching
from fleet.rollout.policy import Policy
from fleet.rollout.report import (
    ABORTED,
    COMPLETED,
    DONE,
    FAILED,
    IN_FLIGHT,
    NOT_RUN,
    PAUSED,
    SKIPPED,
    STOPPED,
    SUCCEEDED,
    UNCHANGED,
    Event,
    Report,
)

POLL_S = 0.2
LATE_GRACE_S = 5.0  # how long a finished rollout waits for devices it gave up on
GATE_STEP = "health gate"
Gate = Callable[[Task], Result]
Probe = Callable[[Host], bool]
EventSink = Callable[[Event], None]


class Control:
    """Cooperative cancellation: `abort` stops scheduling; in-flight devices finish.

    `poll` is asked at every scheduling step for an abort requested elsewhere
    (another process writing the journal); it returns the reason or None.
    """

    def __init__(self, poll: Callable[[], str | None] | None = None,
                 pause_poll: Callable[[], str | None] | None = None) -> None:
        self._reason: str | None = None
        self._poll, self._pause_poll = poll, pause_poll

    def pause_requested(self) -> str | None:
        """A pause asked for elsewhere (`fleet.rollout.pause`): honoured after the batch."""
        return self._pause_poll() if self._pause_poll is not None else None

    def abort(self, reason: str = "abort requested") -> None:
        self._reason = self._reason or reason

    def aborted(self) -> str | None:
        if self._reason is None and self._poll is not None:
            self._reason = self._poll()
        return self._reason


@dataclass
class _Flight:
    host: Host
    started: float
    deadline: float
    abandoned: bool = False


class _StepEmitter:
    """Nornir Processor turning subtask starts into `device_step` events (the live lines)."""

    def __init__(self, emit: EventSink) -> None:
        self.emit = emit

    def task_started(self, task: Task) -> None: ...
    def task_completed(self, task: Task, result: AggregatedResult) -> None: ...
    def task_instance_started(self, task: Task, host: Host) -> None: ...
    def task_instance_completed(self, task: Task, host: Host, result: MultiResult) -> None: ...
    def subtask_instance_completed(self, task: Task, host: Host, result: MultiResult) -> None: ...

    def subtask_instance_started(self, task: Task, host: Host) -> None:
        parent = task.parent_task
        if parent is not None and parent.parent_task is None and task.name != GATE_STEP:
            return  # the work itself: its own subtasks are the steps worth showing
        self.emit({"event": "device_step", "device": host.name, "step": task.name})


class RolloutRunner:
    """Nornir RunnerPlugin: ``run(task, hosts) -> AggregatedResult``, batch by batch.

    gate: a task function run after the work on each device; a failed Result
        (or exception) means the device did not reach the wanted state.
    settle: for a device that was in flight when the controller died: a task
        that may finish what is safe to finish (never the work itself) and
        says whether the device is already done; defaults to the gate.
    probe: ``probe(host) -> bool`` reachability check for the offline policy.
    accept: ``accept(multi) -> reason | None`` judges a finished, unfailed work result by
        what the device reported in it (a gate that costs no extra call); a reason fails it.
    cancel: ``cancel(host)`` asks the work on a timed-out device to stop where it
        safely can; the device already counts as failed, and when its thread ends
        a ``device_late`` event records what it finally did.
    plan / prior: from a journal when resuming (batches of names; outcomes so
        far). Devices whose prior outcome is final are not touched; in-flight
        ones are waited for when offline (up to offline_wait, whatever the
        offline policy: they may be rebooting), settled first, and handed to the
        work again only if that fails (the work continues from the device's state).
    """

    def __init__(self, policy: Policy, *, gate: Gate | None = None, settle: Gate | None = None,
                 probe: Probe | None = None, cancel: Callable[[Host], None] | None = None,
                 accept: Callable[[MultiResult], str | None] | None = None,
                 control: Control | None = None, on_event: Sequence[EventSink] = (),
                 plan: list[list[str]] | None = None,
                 prior: Mapping[str, str] | None = None) -> None:
        self.policy, self.gate, self.probe = policy, gate, probe
        self.settle, self.cancel, self.accept = settle or gate, cancel, accept
        self._abandoned: set[str] = set()
        self.control = control or Control()
        self.sinks = list(on_event)
        self.plan, self.prior = plan, dict(prior or {})
        self.report = Report()
        self._lock = threading.RLock()
        self._done: queue.Queue[tuple[str, str, Any]] = queue.Queue()
        self._stop: tuple[str, str] | None = None

    # events ---------------------------------------------------------------
    def emit(self, event: Event) -> None:
        event = {"t": round(time.time(), 3), **event}
        with self._lock:
            self.report.apply(event)
            for sink in self.sinks:
                sink(event)

    # Nornir RunnerPlugin ----------------------------------------------------
    def run(self, task: Task, hosts: list[Host]) -> AggregatedResult:
        result = AggregatedResult(task.name)
        wrapped = self._wrap(task)
        batches = self._batches(hosts)
        self._restore_prior()
        for number, batch in enumerate(batches, start=1):
            if self._stop is None and self.control.aborted():
                self._stop = (ABORTED, str(self.control.aborted()))
            if self._stop is not None and self._stop[0] == PAUSED:
                break  # later batches stay pending for `resume`
            if self._stop is not None:
                self._mark_not_run(batch, self._stop[1])
                continue
            todo = [h for h in batch if self.prior.get(h.name) not in DONE]
            if not todo:
                continue
            self._run_batch(number, batch, todo, wrapped, result)
            if self._stop is None and number < len(batches):
                self._stop = self._pause_verdict(number)
        self._drain_abandoned()
        status, reason = self._stop or (COMPLETED, "")
        if status == PAUSED and not self._pending():
            status, reason = COMPLETED, ""
        self.emit({"event": "run_finished", "status": status, "reason": reason})
        return result

    def _pause_verdict(self, number: int) -> tuple[str, str] | None:
        if self.policy.pause_after_batch:
            return (PAUSED, f"paused after batch {number}; run `fleet ota resume`")
        asked = self.control.pause_requested()
        if asked:
            return (PAUSED, f"paused after batch {number} ({asked}); run `fleet ota resume`")
        return None

    def _drain_abandoned(self) -> None:
        """Give timed-out devices a short grace to stop, so the journal says how they ended."""
        end = time.monotonic() + min(LATE_GRACE_S, self.policy.device_timeout)
        while self._abandoned and time.monotonic() < end:
            try:
                kind, name, payload = self._done.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                return
            if kind == "done" and name in self._abandoned:
                self._abandoned.discard(name)
                self.emit({"event": "device_late", "device": name, "outcome": payload[0],
                           "reason": payload[1]})

    def _batches(self, hosts: list[Host]) -> list[list[Host]]:
        by_name = {h.name: h for h in hosts}
        if self.plan is None:
            planned = batching.plan(hosts, self.policy, batching.describe_host)
        else:
            planned = [[by_name[n] for n in b if n in by_name] for b in self.plan]
        names = [[h.name for h in b] for b in planned]
        sites = {h.name: batching.describe_host(h).site for h in hosts}
        self.emit({"event": "planned", "batches": names, "sites": sites})
        return planned

    def _restore_prior(self) -> None:
        with self._lock:
            for name, outcome in self.prior.items():
                if name in self.report.devices:
                    self.report.devices[name].outcome = outcome

    def _pending(self) -> bool:
        return any(d.outcome not in DONE for d in self.report.devices.values())

    def _mark_not_run(self, batch: list[Host], reason: str) -> None:
        for host in batch:
            if self.report.device(host.name).outcome not in DONE:
                self.emit({"event": "device_finished", "device": host.name,
                           "outcome": NOT_RUN, "reason": reason})

    # one batch ------------------------------------------------------------
    def _run_batch(self, number: int, batch: list[Host], todo: list[Host], wrapped: Task,
                   result: AggregatedResult) -> None:
        self.emit({"event": "batch_started", "batch": number, "size": len(batch),
                   "devices": [h.name for h in batch]})
        pending, flights = list(todo), dict[str, _Flight]()
        while pending or flights:
            if self._stop is None:
                self._check_abort()
            if self._stop is not None and pending:
                self._mark_not_run(pending, self._stop[1])
                pending = []
            self._start_eligible(number, pending, flights, wrapped)
            self._collect(flights, result, number, batch)
        failed = self.report.failures([h.name for h in batch])
        self.emit({"event": "batch_finished", "batch": number, "size": len(batch),
                   "failed": failed, "failed_pct": round(100.0 * failed / len(batch), 1)})
        if self._stop is None:
            self._stop = self._batch_verdict(number, batch, final=True)

    def _check_abort(self) -> None:
        reason = self.control.aborted()
        if reason:
            self._stop = (ABORTED, reason)

    def _start_eligible(self, number: int, pending: list[Host], flights: dict[str, _Flight],
                        wrapped: Task) -> None:
        while pending and len(flights) < self.policy.concurrency:
            host = next((h for h in pending if self._site_has_room(h, flights)), None)
            if host is None:
                return
            pending.remove(host)
            self._launch(number, host, flights, wrapped)

    def _site_has_room(self, host: Host, flights: dict[str, _Flight]) -> bool:
        limit = self.policy.per_site_concurrency
        if limit is None:
            return True
        site = batching.describe_host(host).site
        busy = sum(1 for f in flights.values() if batching.describe_host(f.host).site == site)
        return busy < limit

    def _launch(self, number: int, host: Host, flights: dict[str, _Flight],
                wrapped: Task) -> None:
        now = time.monotonic()
        waits = self.policy.offline == "wait" or self._resuming(host)
        wait = self.policy.offline_wait if waits else 0.0
        flights[host.name] = _Flight(host, now, now + wait + self.policy.device_timeout)
        self.emit({"event": "device_started", "device": host.name, "batch": number})
        thread = threading.Thread(target=self._device, args=(host, wrapped),
                                  name=f"rollout-{host.name}", daemon=True)
        thread.start()

    def _collect(self, flights: dict[str, _Flight], result: AggregatedResult, number: int,
                 batch: list[Host]) -> None:
        if not flights:
            return
        nearest = min(f.deadline for f in flights.values()) - time.monotonic()
        try:
            kind, name, payload = self._done.get(timeout=max(0.0, min(POLL_S, nearest)))
        except queue.Empty:
            self._expire(flights, result)
            return
        flight = flights.get(name)
        if flight is None:  # a late answer from a device that already timed out
            if kind == "done" and name in self._abandoned:
                self._abandoned.discard(name)
                self.emit({"event": "device_late", "device": name, "outcome": payload[0],
                           "reason": payload[1]})
            return
        if kind == "working":  # online and working: the device_timeout clock starts now
            flight.deadline = time.monotonic() + self.policy.device_timeout
            return
        del flights[name]
        self._finish(flight, payload, result)
        if self._stop is None:
            self._stop = self._batch_verdict(number, batch, final=False)

    def _expire(self, flights: dict[str, _Flight], result: AggregatedResult) -> None:
        now = time.monotonic()
        for name, flight in list(flights.items()):
            if now >= flight.deadline:
                del flights[name]
                reason = f"still in progress after device_timeout {self.policy.device_timeout:g}s"
                multi = _single(flight.host, reason, failed=True)
                self._abandoned.add(name)
                if self.cancel is not None:
                    self.cancel(flight.host)  # cooperative: the work stops where it safely can
                self._finish(flight, (FAILED, reason, multi), result)

    def _finish(self, flight: _Flight, payload: tuple[str, str, MultiResult],
                result: AggregatedResult) -> None:
        outcome, reason, multi = payload
        result[flight.host.name] = multi
        self.emit({"event": "device_finished", "device": flight.host.name, "outcome": outcome,
                   "reason": reason, "duration": round(time.monotonic() - flight.started, 2)})

    # thresholds -------------------------------------------------------------
    def _batch_verdict(self, number: int, batch: list[Host], *, final: bool
                       ) -> tuple[str, str] | None:
        total_failed = self.report.failures()
        limit = self.policy.max_failures
        if limit is not None and total_failed >= limit:
            return STOPPED, f"max_failures reached: {total_failed} devices failed (limit {limit})"
        failed = self.report.failures([h.name for h in batch])
        pct = 100.0 * failed / len(batch)
        allowed = self.policy.max_fail_percentage
        if allowed is not None and pct > allowed:
            return STOPPED, (f"batch {number}: {failed}/{len(batch)} failed ({pct:.0f}%) "
                             f"exceeds max_fail_percentage {allowed:g}%")
        if allowed is None and final and failed == len(batch):
            return STOPPED, f"batch {number}: every device failed"
        return None

    # one device (worker thread) ---------------------------------------------
    def _device(self, host: Host, wrapped: Task) -> None:
        try:
            payload = self._device_outcome(host, wrapped)
        except Exception as exc:  # the runner must never lose a device to a bug
            payload = (FAILED, f"{type(exc).__name__}: {exc}", _single(host, str(exc), True))
        self._done.put(("done", host.name, payload))

    def _device_outcome(self, host: Host, wrapped: Task) -> tuple[str, str, MultiResult]:
        resuming = self._resuming(host)
        offline = self._offline(host, must_wait=resuming)
        if offline is not None:
            return offline
        if host.name in self._abandoned:  # timed out while we were still probing it
            why = "cancelled before it started: past device_timeout"
            return FAILED, why, _single(host, why, failed=True)
        self._done.put(("working", host.name, None))
        if resuming and self._verified(host, wrapped):
            why = "verified after resume: already in the wanted state"
            return SUCCEEDED, why, _single(host, why, failed=False)
        # A resumed device is continued from its own state by the work, not started afresh.
        self.emit({"event": "device_continuing" if resuming else "device_installing",
                   "device": host.name})
        multi = wrapped.copy().start(host)
        if multi.failed:
            return FAILED, failure_reason(multi), multi
        refused = self.accept(multi) if self.accept is not None else None
        if refused:
            gate_result = Result(host, failed=True, result=refused)
            gate_result.name = GATE_STEP  # type: ignore[assignment]  # Nornir types it None
            multi.append(gate_result)
            return FAILED, f"{GATE_STEP}: {refused}", multi
        return (SUCCEEDED if _work_changed(multi) else UNCHANGED), "", multi

    def _resuming(self, host: Host) -> bool:
        """Was the device in flight when the controller died (it may be rebooting now)?"""
        return self.prior.get(host.name) == IN_FLIGHT

    def _offline(self, host: Host, must_wait: bool = False
                 ) -> tuple[str, str, MultiResult] | None:
        """None when the device answers (after waiting, if the policy or `must_wait` says
        so: a device left in flight by a dead controller may be rebooting)."""
        if self.probe is None or self._probe(host):
            return None
        if self.policy.offline == "wait" or must_wait:
            self.emit({"event": "device_waiting", "device": host.name,
                       "timeout": self.policy.offline_wait})
            if self._wait_online(host):
                return None
            why = f"offline: still unreachable after waiting {self.policy.offline_wait:g}s"
            return FAILED, why, _single(host, why, failed=True)
        if self.policy.offline == "fail":
            return FAILED, "offline", _single(host, "offline", failed=True)
        return SKIPPED, "offline", _single(host, "skipped: offline", failed=False)

    def _probe(self, host: Host) -> bool:
        try:
            return bool(self.probe(host)) if self.probe else True
        except Exception:  # an unreachable device is an answer, not a crash
            return False

    def _wait_online(self, host: Host) -> bool:
        end = time.monotonic() + self.policy.offline_wait
        interval = min(2.0, max(0.1, self.policy.offline_wait / 20))
        while time.monotonic() < end and not self.control.aborted():
            time.sleep(interval)  # polling a device that is away: nothing to wait on but time
            if self._probe(host):
                return True
        return False

    def _verified(self, host: Host, wrapped: Task) -> bool:
        if self.settle is None:
            return False
        check = Task(self.settle, wrapped.nornir, wrapped.global_dry_run, wrapped.processors,
                     name="resume check")
        try:
            return not check.start(host).failed
        except Exception:
            return False

    def _wrap(self, task: Task) -> Task:
        work, params, gate = task.task, dict(task.params), self.gate

        def rollout_device(inner: Task) -> Result:
            sub = inner.run(task=work, name=task.name, **params)
            if gate is not None:
                inner.run(task=gate, name=GATE_STEP)
            return Result(host=inner.host, changed=sub.changed, result=sub.result)

        processors = Processors([*task.processors, _StepEmitter(self.emit)])
        return Task(rollout_device, task.nornir, task.global_dry_run, processors, name=task.name)


def _work_changed(multi: MultiResult) -> bool:
    return bool(multi[0].changed)  # the wrapper carries the work's `changed`, not the gate's


def _single(host: Host, text: str, failed: bool) -> MultiResult:
    multi = MultiResult("rollout")
    multi.append(Result(host, result=text, failed=failed))
    return multi


def failure_reason(multi: MultiResult) -> str:
    """The most specific one-line reason in a failed MultiResult."""
    for res in reversed(multi):
        if not res.failed or isinstance(res.exception, NornirSubTaskError):
            continue
        text = str(res.exception) if res.exception is not None else _text(res.result)
        return f"{res.name}: {text}" if res.name == GATE_STEP else text
    return "failed"


def _text(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("reason") or value.get("error") or value
    lines = str(value).strip().splitlines()
    return lines[-1][:300] if lines else "failed"
