"""Rollouts from start to finish: journal + runner + Nornir, and the verbs on a rollout id.

`start` writes the journal header (refused when an unfinished rollout shares
devices), runs the batched runner with the journal as an event sink, and
returns the replayed report. `resume` continues an interrupted or paused
rollout from its journal; `retry` reruns failed, skipped and never-reached
devices; `abort` asks a running rollout to stop (or closes one nobody runs);
`status` replays (an IoT Jobs rollout: from its executions in AWS). Works for
any registered `Work` kind (``work.py``; the OTA one lives in update.py).

>>> report = start(project, nr, work, policy, selection={"sites": ["berlin"]})  # doctest: +SKIP
>>> report.status, report.counts()                                            # doctest: +SKIP
('completed', {'succeeded': 3})
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from nornir.core import Nornir
from nornir.core.inventory import Host

from fleet.errors import UsageError
from fleet.project import Project
from fleet.rollout import batches as batching
from fleet.rollout.journal import INTERRUPTED, Journal, refuse_overlap
from fleet.rollout.policy import Policy
from fleet.rollout.report import (
    ABORTED,
    DONE,
    FAILED,
    IN_FLIGHT,
    NOT_RUN,
    PAUSED,
    RETRYABLE,
    SKIPPED,
    TERMINAL,
    Event,
    Report,
)
from fleet.rollout.runner import Control, EventSink, RolloutRunner
from fleet.rollout.work import Work

ABORTED_IN_FLIGHT = "aborted; was in flight when the controller stopped: check the device"


def start(project: Project, nr: Nornir, work: Work, policy: Policy, *,
          selection: dict[str, Any], sinks: Sequence[EventSink] = (),
          engine: str = "ssh") -> Report:
    """A new rollout over every host in `nr`."""
    devices = list(nr.inventory.hosts)
    header = {**work.header(), "policy": policy.to_dict(), "selection": selection,
              "engine": engine}
    journal = Journal.create(project, header=header, devices=devices)
    return _run(journal, nr, work, policy, sinks, plan=None, prior=None)


def _run(journal: Journal, nr: Nornir, work: Work, policy: Policy, sinks: Sequence[EventSink],
         plan: list[list[str]] | None, prior: dict[str, str] | None) -> Report:
    journal.watch_from_now()
    runner = RolloutRunner(policy, gate=work.gate, settle=work.verify, probe=work.probe(nr),
                           cancel=work.cancel, accept=work.accept,
                           control=Control(journal.abort_poll, journal.pause_poll), on_event=[journal, *sinks],
                           plan=plan, prior=prior)
    try:
        nr.with_runner(runner).run(task=work.apply, name="rollout", **work.params())
    finally:
        for host in nr.inventory.hosts.values():
            _close(host)
        journal.release()
    return journal.report()


def resume(project: Project, rollout_id: str | None, nr_for: Callable[[list[str]], Nornir],
           work: Work, sinks: Sequence[EventSink] = ()) -> Report:
    """Continue an interrupted or paused rollout where its journal stops."""
    journal = Journal.open(project, rollout_id)
    report = journal.report()
    if report.status in TERMINAL:
        raise UsageError(f"rollout {journal.id} is {report.status}: nothing to resume",
                         fix=f"`{noun(report)} retry {journal.id} --failed` reruns failed "
                         "devices")
    journal.acquire()
    journal.append({"event": "resumed", "from": report.status})
    prior = {n: d.outcome for n, d in report.devices.items()}
    policy = Policy.from_mapping(report.header.get("policy", {}), where=str(journal.path))
    nr = nr_for(list(report.header.get("devices", [])))
    return _run(journal, nr, work, policy, sinks, plan=report.batches, prior=prior)


def retry(project: Project, rollout_id: str | None, nr_for: Callable[[list[str]], Nornir],
          work: Work, sinks: Sequence[EventSink] = ()) -> Report:
    """Rerun failed, skipped and never-reached devices of a finished rollout, in new batches."""
    journal = Journal.open(project, rollout_id)
    report = journal.report()
    if report.status not in TERMINAL:
        raise UsageError(f"rollout {journal.id} is {report.status}, not finished",
                         fix=f"`{noun(report)} resume {journal.id}` continues it")
    names = report.with_outcome(*RETRYABLE)
    if not names:
        raise UsageError(f"rollout {journal.id} has no failed or skipped devices to retry")
    refuse_overlap(project, set(names), exclude=journal.id)
    journal.acquire()
    policy = Policy.from_mapping(report.header.get("policy", {}), where=str(journal.path))
    nr = nr_for(names)
    hosts = [nr.inventory.hosts[n] for n in names if n in nr.inventory.hosts]
    plan = [[h.name for h in b]
            for b in batching.plan(hosts, policy, batching.describe_host)]
    journal.append({"event": "retry", "devices": names, "batches": plan,
                    "sites": {h.name: batching.describe_host(h).site for h in hosts}})
    # Devices a dead controller left mid-update are continued like a resume (waited for if
    # away, e.g. rebooting; settled first), not started afresh.
    prior = {n: IN_FLIGHT for n in names if report.devices[n].reason == ABORTED_IN_FLIGHT}
    return _run(journal, nr, work, policy, sinks, plan=plan, prior=prior)


def abort(project: Project, rollout_id: str | None, reason: str = "aborted by operator"
          ) -> Report:
    """Running: ask it to stop scheduling (in-flight devices finish or roll back).
    Not running (interrupted, paused): close it now."""
    journal = Journal.open(project, rollout_id)
    report = journal.report()
    if report.status in TERMINAL:
        raise UsageError(f"rollout {journal.id} is already {report.status}")
    journal.append({"event": "abort_requested", "reason": reason})
    if journal.is_running():
        return journal.report()
    for name, dev in report.devices.items():
        if dev.outcome not in DONE:
            why = ABORTED_IN_FLIGHT if dev.outcome == IN_FLIGHT else "aborted before it was reached"
            journal.append(_finished(name, NOT_RUN, why))
    journal.append({"event": "run_finished", "status": ABORTED, "reason": reason})
    return journal.report()


def _close(host: Host) -> None:
    try:
        host.close_connections()
    except Exception:  # a connection that died with its device: nothing left to close
        host.connections.clear()


def status(project: Project, rollout_id: str | None) -> Report:
    """The journal replayed (for an IoT Jobs rollout: only what was handed over)."""
    return Journal.open(project, rollout_id).report()


def noun(report: Report) -> str:
    """The command that rolls this kind out (``fleet ota`` for kind ota)."""
    return f"fleet {report.header.get('kind') or 'ota'}"


def _finished(name: str, outcome: str, reason: str) -> Event:
    return {"event": "device_finished", "device": name, "outcome": outcome, "reason": reason}


def exit_code(report: Report) -> int:
    """0: every device succeeded or was current; 1: anything failed, stopped or is unfinished."""
    if report.status in (PAUSED, INTERRUPTED, "running"):
        return 0 if report.status == PAUSED else 1
    bad = report.with_outcome(FAILED, NOT_RUN, SKIPPED)
    return 1 if bad or report.status != "completed" else 0
