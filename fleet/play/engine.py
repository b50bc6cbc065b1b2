"""Playbook runs from start to finish: check everything, then each play through the runner.

`prepare` reads the playbook, imports the project's operations, reads the
inventory and checks it all (validate.py) before a device is touched. `start`
journals a new run and plays each play: its hosts (pattern, narrowed by the
selectors and ``--limit``; devices that failed an earlier play are left out,
as Ansible does), a rollout `Policy` from ``serial``/``max_fail_percentage``/
``any_errors_fatal`` over fleet.yaml's ``rollout:`` settings, and the rollout
runner over `PlayWork`. A play that stops (a failure threshold) stops the run.
`resume` replays the journal and continues: finished plays are skipped, the
interrupted one continues with the runner's plan and prior outcomes, and no
step journaled as finished on a device runs again. `abort` asks a running run
to stop (the runner schedules no more devices, a device in flight stops before
its next task) or closes one nobody runs; an aborted run is never resumed.

>>> prepared = prepare(project, Path("playbooks/incident.yaml"), Options())  # doctest: +SKIP
>>> state = start(prepared)                                                  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nornir.core import Nornir
from nornir.core.inventory import Host

from fleet import inventory as inv
from fleet.errors import UsageError
from fleet.play import discovery, patterns, validate
from fleet.play.journal import INTERRUPTED, RUNNING, PlayJournal, PlayState
from fleet.play.playbook import Play, Playbook, PlaybookError, load
from fleet.play.variables import extra_vars, host_layers, vars_file
from fleet.play.work import PlayWork, RunSettings
from fleet.project import Project
from fleet.rollout import policy as policies
from fleet.rollout.report import ABORTED, COMPLETED, DONE, FAILED, NOT_RUN, Event, Report
from fleet.rollout.runner import Control, RolloutRunner

Sink = Callable[[Event], None]
STOPPED = "stopped"


@dataclass(frozen=True)
class Options:
    """What the command line adds to a playbook."""

    check: bool = False
    diff: bool = False
    tags: tuple[str, ...] = ()
    skip_tags: tuple[str, ...] = ()
    limit: str | None = None
    extra: tuple[str, ...] = ()
    inventory: str | None = None
    sites: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    device_tags: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Options:
        known = {f.name for f in dataclasses.fields(cls)}
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                  for k, v in data.items() if k in known}
        return cls(**fields)


@dataclass
class Prepared:
    """A checked playbook with its inventory, ready to run."""

    project: Project
    book: Playbook
    options: Options
    nr: Nornir
    targets: list[patterns.Target]
    settings: RunSettings
    loaded: list[str] = field(default_factory=list)

    def hosts(self, play: Play) -> list[str]:
        """The play's devices: its pattern, the selectors, then --limit (a pattern too)."""
        o = self.options
        sel = inv.Selection(o.inventory, o.sites, o.groups, o.device_tags)
        allowed = {n for n, h in self.nr.inventory.hosts.items() if inv.matches(h, sel)}
        chosen = [t for t in patterns.select(play.hosts, self.targets) if t.name in allowed]
        if o.limit:
            limited = {t.name for t in patterns.select(o.limit, self.targets)}
            chosen = [t for t in chosen if t.name in limited]
        return [t.name for t in chosen]


def prepare(project: Project, path: Path, options: Options) -> Prepared:
    """Everything checked, nothing run: PlaybookError (exit 2) names file:line."""
    book = load(path)
    loaded = discovery.discover(project)
    nr = inv.load(project, options.inventory)
    targets = patterns.targets_of(nr.inventory.hosts.values())
    if options.limit:
        try:
            patterns.select(options.limit, targets)
        except patterns.PatternError as exc:
            raise UsageError(f"--limit: {exc.what}", fix=exc.fix) from None
    extra = extra_vars(options.extra, Path.cwd())
    files = {p.index: _vars_files(book, p) for p in book.plays}
    names = {k for h in nr.inventory.hosts.values() for k in host_layers(h)}
    validate.check(book, targets, names, set(extra), files)
    settings = RunSettings(project, path.resolve(), options.check, options.diff,
                           frozenset(options.tags), frozenset(options.skip_tags), extra, files)
    return Prepared(project, book, options, nr, targets, settings, loaded)


def _vars_files(book: Playbook, play: Play) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for index, name in enumerate(play.vars_files):
        try:
            out.update(vars_file(name, book.path))
        except UsageError as exc:
            raise PlaybookError(f"{book.where([play.index, 'vars_files', index])}: {exc.what}",
                                fix=exc.fix) from None
    return out


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def start(prepared: Prepared, sinks: Sequence[Sink] = ()) -> PlayState:
    """Journal a new run and play every play."""
    header = {"playbook": str(prepared.settings.playbook),
              "sha256": digest(prepared.settings.playbook),
              "options": prepared.options.to_dict(), "check": prepared.options.check}
    journal = PlayJournal.create_play(prepared.project, header)
    return _run(journal, prepared, PlayState(), sinks)


def resume(project: Project, play_id: str | None, sinks: Sequence[Sink] = ()) -> PlayState:
    """Continue an interrupted run from its journal; finished steps never run again."""
    journal = PlayJournal.open_play(project, play_id)
    state = journal.state()
    if state.status != INTERRUPTED:
        raise UsageError(f"play run {journal.id} is {state.status}: nothing to resume",
                         fix="start it again with `fleet play PLAYBOOK`")
    path = Path(str(state.header["playbook"]))
    if not path.exists() or digest(path) != state.header.get("sha256"):
        raise UsageError(f"{path} changed (or is gone) since run {journal.id} started",
                         fix="restore the playbook it ran, or start a new run")
    prepared = prepare(project, path, Options.from_dict(dict(state.header.get("options", {}))))
    journal.acquire()
    journal.append({"event": "resumed"})
    return _run(journal, prepared, state, sinks)


def status(project: Project, play_id: str | None) -> PlayState:
    return PlayJournal.open_play(project, play_id).state()


def abort(project: Project, play_id: str | None, reason: str = "aborted by operator"
          ) -> PlayState:
    """Running: ask it to stop (seen at its next scheduling step and before each device's
    next task). Not running: mark it aborted now, so `resume` refuses it."""
    journal = PlayJournal.open_play(project, play_id)
    state = journal.state()
    if state.status not in (RUNNING, INTERRUPTED):
        raise UsageError(f"play run {journal.id} is already {state.status}")
    try:
        journal.acquire()  # nobody runs it, and nobody can start resuming it meanwhile
    except UsageError:
        journal.append({"event": "abort_requested", "reason": reason})
        return journal.state()
    try:
        journal.append({"event": "abort_requested", "reason": reason})
        for index in sorted(set(state.reports) - set(state.finished_plays)):
            _close_play(journal, index, state.reports[index], reason)
        journal.append({"event": "playbook_finished", "status": ABORTED, "reason": reason})
    finally:
        journal.release()
    return journal.state()


def _close_play(journal: PlayJournal, index: int, report: Report, reason: str) -> None:
    """An interrupted play closed as aborted: its unfinished devices never ran to the end."""
    for name, dev in report.devices.items():
        if dev.outcome not in DONE:
            journal.append({"event": "device_finished", "device": name, "outcome": NOT_RUN,
                            "reason": f"aborted ({dev.outcome or 'not reached'})",
                            "play": index})
    journal.append({"event": "run_finished", "status": ABORTED, "reason": reason, "play": index})
    journal.append({"event": "play_finished", "status": ABORTED, "reason": reason,
                    "play": index})


def _run(journal: PlayJournal, prepared: Prepared, prior: PlayState,
         sinks: Sequence[Sink]) -> PlayState:
    settings = prepared.settings
    settings.done = {k: dict(v) for k, v in prior.tasks.items()}
    for event in prior.order:
        if event.get("register"):
            settings.registered.setdefault(str(event["device"]), {})[
                str(event["register"])] = event.get("value") or {}
    failed: set[str] = set()
    verdict: tuple[str, str] = (COMPLETED, "")
    journal.watch_from_now()  # an abort asked of an earlier process is not this run's
    watch = AbortWatch(journal.abort_poll)
    try:
        for play in prepared.book.plays:
            status, reason = _play(journal, prepared, play, prior, failed, sinks, watch)
            if status != COMPLETED:
                verdict = (status if status == ABORTED else STOPPED,
                           f"play {play.name!r}: {reason}")
                break
        _emit([journal, *sinks], {"event": "playbook_finished", "status": verdict[0],
                                  "reason": verdict[1]})
    finally:
        for host in prepared.nr.inventory.hosts.values():
            _close(host)
        journal.release()
    return journal.state()


class AbortWatch:
    """The journal's abort poll for the runner and every device thread (before each task):
    serialized, and what it found is kept."""

    def __init__(self, poll: Callable[[], str | None]) -> None:
        self.poll = poll
        self.reason: str | None = None
        self._lock = threading.Lock()

    def __call__(self) -> str | None:
        with self._lock:
            self.reason = self.reason or self.poll()
            return self.reason


def _play(journal: PlayJournal, prepared: Prepared, play: Play, prior: PlayState,
          failed: set[str], sinks: Sequence[Sink], watch: AbortWatch) -> tuple[str, str]:
    report = prior.reports.get(play.index)
    if play.index in prior.finished_plays:
        failed.update(report.with_outcome(FAILED) if report else [])
        status = prior.finished_plays[play.index]
        return status, "stopped before the controller did" if status != COMPLETED else ""

    def emit(event: Event) -> None:
        _emit([journal, *sinks], {**event, "play": play.index})

    names = prior.devices.get(play.index)
    if names is None:
        names = [n for n in prepared.hosts(play) if n not in failed]
        emit({"event": "play_started", "name": play.name, "devices": names})
    chosen = set(names)
    runner = RolloutRunner(_policy(prepared.project, play), control=Control(watch),
                           on_event=[emit], plan=report.batches if report and report.batches
                           else None, prior=_prior(report))
    work = PlayWork(prepared.settings, play, emit, show=lambda event: _emit(sinks, event),
                    aborted=watch)
    nr = prepared.nr.filter(filter_func=lambda h: h.name in chosen)
    if nr.inventory.hosts:
        nr.with_runner(runner).run(task=work.apply, name=play.name)
    else:
        runner.emit({"event": "run_finished", "status": COMPLETED, "reason": "no devices"})
    failed.update(runner.report.with_outcome(FAILED))
    status, reason = runner.report.status, runner.report.reason
    if status != COMPLETED and watch.reason:  # devices it stopped may have tripped a threshold
        status, reason = ABORTED, watch.reason
    emit({"event": "play_finished", "status": status, "reason": reason})
    return status, reason


def _prior(report: Report | None) -> dict[str, str] | None:
    """Devices the runner must not touch again (done) or must continue (in flight)."""
    return None if report is None else {n: d.outcome for n, d in report.devices.items()}


def _policy(project: Project, play: Play) -> policies.Policy:
    base = policies.Policy.from_mapping(project.config.get("rollout") or {},
                                        where="fleet.yaml: rollout")
    return dataclasses.replace(
        base, batches=tuple(play.serial), max_fail_percentage=play.max_fail_percentage,
        max_failures=1 if play.any_errors_fatal else base.max_failures, pause_after_batch=False)


def _close(host: Host) -> None:
    try:
        host.close_connections()
    except Exception:  # a connection that died with its device: nothing left to close
        host.connections.clear()


def _emit(sinks: Sequence[Sink], event: Event) -> None:
    for sink in sinks:
        sink(event)


def exit_code(state: PlayState) -> int:
    """0: every device ok (failures ignored or rescued count as ok, as in Ansible);
    1: a task failed, a play stopped or the run is unfinished."""
    from fleet.play.recap import recap_rows

    if state.status != COMPLETED:
        return 1
    bad = {FAILED, NOT_RUN}
    if any(d.outcome in bad for r in state.reports.values() for d in r.devices.values()):
        return 1
    return 1 if any(row["failed"] for row in recap_rows(state)) else 0
