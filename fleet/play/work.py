"""One play as rollout work: the task list a device runs, handed to the rollout runner.

The runner (fleet/rollout/runner.py) brings batches, concurrency, per-site
limits, device timeouts and failure thresholds; `PlayWork.apply` is the
Nornir task it runs on each device: the play's steps in order (``when``,
``register``, ``notify``, ``ignore_errors``, ``block``/``rescue``/``always``),
then the notified handlers. A failed step stops that device. Every finished
step is a ``task_done`` event (journaled by the engine); a step journaled as
finished is never run again: its outcome and registered value are taken from
the journal (resume).

>>> work = PlayWork(run, play)                                   # doctest: +SKIP
>>> nr.with_runner(runner).run(task=work.apply, name=play.name)  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nornir.core import Nornir
from nornir.core.inventory import Host
from nornir.core.task import MultiResult, Result, Task

from fleet.errors import FleetError, UsageError
from fleet.play import operations as ops
from fleet.play import templating
from fleet.play.playbook import Play, Step
from fleet.play.validate import check_arguments, coerce
from fleet.play.variables import host_layers, layered, registered_value
from fleet.project import Project

ONCE = "*"  # the device name a scope="once" task is journaled under
Sink = Callable[[dict[str, Any]], None]


@dataclass
class RunSettings:
    """What every play of one run shares."""

    project: Project
    playbook: Path
    check: bool = False
    diff: bool = False
    tags: frozenset[str] = frozenset()
    skip_tags: frozenset[str] = frozenset()
    extra: Mapping[str, Any] = field(default_factory=dict)
    vars_files: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    done: dict[tuple[int, str, str], dict[str, Any]] = field(default_factory=dict)
    registered: dict[str, dict[str, Any]] = field(default_factory=dict)

    def wanted(self, tags: frozenset[str]) -> bool:
        """Ansible's --tags/--skip-tags: `always` runs unless skipped by name."""
        if tags & self.skip_tags:
            return False
        return not self.tags or bool(tags & self.tags) or "always" in tags


@dataclass
class _Device:
    """One device's walk through the play."""

    name: str
    vars: dict[str, Any]
    failed: str = ""
    changed: bool = False
    notified: set[str] = field(default_factory=set)


class PlayWork:
    """The rollout `Work` of one play (kind ``play``)."""

    kind = "play"
    version = ""
    gate = None

    def __init__(self, settings: RunSettings, play: Play, emit: Sink,
                 show: Sink | None = None,
                 aborted: Callable[[], str | None] = lambda: None) -> None:
        """`emit`: events worth journaling; `show`: progress for the display only (an
        upload's percentages would cost an fsync each in the journal); `aborted`: the
        reason once the run was asked to stop (`fleet play abort`): each device stops
        before its next task."""
        self.settings, self.play, self.emit = settings, play, emit
        self.show = show or (lambda event: None)
        self.aborted = aborted
        self._once: dict[str, ops.Outcome] = {}
        self._once_lock = threading.Lock()
        self._cancelled: set[str] = set()

    @classmethod
    def from_header(cls, project: Project, header: dict[str, Any],
                    progress: Any = None) -> PlayWork:
        """A play is rebuilt from its own journal (`fleet play resume`), not a rollout's."""
        raise UsageError(f"play work from {header.get('playbook')} is resumed with "
                         "`fleet play resume ID`", fix="see `fleet play status`")

    # the Work contract ------------------------------------------------------
    @property
    def artifact(self) -> Path:
        return self.settings.playbook

    def header(self) -> dict[str, Any]:
        return {"kind": self.kind, "playbook": str(self.settings.playbook),
                "play": self.play.index}

    @property
    def apply(self) -> Callable[..., Result]:
        return self.run_device

    def params(self) -> dict[str, Any]:
        return {}

    def decide(self, task: Task) -> Result:
        return Result(task.host, result={"state": "change"})

    def accept(self, multi: MultiResult) -> str | None:
        return None

    def verify(self, task: Task) -> Result:
        return Result(task.host, failed=True, result="a play continues from its journal")

    def probe(self, nr: Nornir) -> Callable[[Host], bool] | None:
        return None

    def cancel(self, host: Host) -> None:
        self._cancelled.add(host.name)  # the device stops before its next step

    # one device -------------------------------------------------------------
    def run_device(self, task: Task) -> Result:
        host = task.host
        device = _Device(host.name, {})
        try:
            device.vars = self._vars(host)
        except templating.TemplateFailure as exc:
            device.failed = f"play vars: {exc}"
        if not device.failed and self._steps(task, device, self.play.steps, frozenset()):
            self._handlers(task, device)
        return Result(host, failed=bool(device.failed), changed=device.changed,
                      result={"reason": device.failed} if device.failed else {})

    def _vars(self, host: Host) -> dict[str, Any]:
        s = self.settings
        base = layered(host_layers(host), {"playbook_dir": str(s.playbook.parent),
                                           "project_dir": str(s.project.root)})
        for layer in (self.play.vars, s.vars_files.get(self.play.index, {})):
            base = layered(base, {k: templating.render_value(v, base) for k, v in layer.items()})
        return layered(base, s.registered.get(host.name, {}), s.extra)

    def _handlers(self, task: Task, device: _Device) -> None:
        for handler in self.play.handlers:
            if handler.name in device.notified and not device.failed:
                self._step(task, device, handler, frozenset({"always"}))

    def _steps(self, task: Task, device: _Device, steps: tuple[Step, ...],
               tags: frozenset[str]) -> bool:
        """False once a step failed (not ignored) on this device."""
        for step in steps:
            if device.name in self._cancelled:
                device.failed = device.failed or "stopped: past device_timeout"
            stop = self.aborted()
            if stop:
                device.failed = device.failed or f"stopped before {step.name!r}: {stop}"
            if device.failed or not self._step(task, device, step, tags):
                return False
        return True

    def _step(self, task: Task, device: _Device, step: Step, tags: frozenset[str]) -> bool:
        tags = tags | step.tags
        if step.is_block:
            return self._block(task, device, step, tags)
        if not self.settings.wanted(tags):
            return True
        return self._operation(task, device, step)

    def _block(self, task: Task, device: _Device, step: Step, tags: frozenset[str]) -> bool:
        verdict = self._when(device, step)
        if isinstance(verdict, str):  # the condition itself failed: so does the device
            device.failed = f"{step.name}: {verdict}"
            return False
        if verdict is False:
            for child in step.walk():
                if not child.is_block and self.settings.wanted(tags | child.tags):
                    self._finish(device, child, _skipped(verdict), replay=None)
            return True
        ok = self._steps(task, device, step.block, tags)
        if not ok and step.rescue:
            self._record(device.name, step, {"status": "rescued", "msg": device.failed})
            device.failed = ""
            ok = self._steps(task, device, step.rescue, tags)
        reason, device.failed = device.failed, ""
        always = self._steps(task, device, step.always, tags)
        device.failed = reason or device.failed
        return ok and always

    def _when(self, device: _Device, step: Step) -> bool | str:
        """True to run; otherwise why not (False → a plain skip)."""
        for expr in step.when:
            try:
                value = expr if isinstance(expr, bool) else templating.evaluate(expr,
                                                                                device.vars)
            except templating.TemplateFailure as exc:
                return f"when: {exc}"
            if not value:
                return False
        return True

    def _operation(self, task: Task, device: _Device, step: Step) -> bool:
        replay = self.settings.done.get((self.play.index, device.name, step.id))
        if replay is not None:
            outcome = _outcome_of(replay)
        else:
            verdict = self._when(device, step)
            outcome = self._call(task, device, step) if verdict is True else _skipped(verdict)
        return self._finish(device, step, outcome, replay)

    def _finish(self, device: _Device, step: Step, outcome: ops.Outcome,
                replay: dict[str, Any] | None) -> bool:
        status = status_of(outcome, self.settings.check)
        if replay is None and not (self.is_once(step) and status not in ("skipped", "failed")):
            # a once-per-play result is journaled once, under ONCE, not per device
            self._record(device.name, step, {
                "status": status, "msg": outcome.msg, "ignored": outcome.failed and
                step.ignore_errors, "register": step.register,
                "value": self._value(outcome) if step.register else None,
                "diff": outcome.diff if self.settings.diff and outcome.diff else None})
        if step.register:
            value = self._value(outcome)
            device.vars[step.register] = value
            self.settings.registered.setdefault(device.name, {})[step.register] = value
            device.vars = layered(device.vars, self.settings.extra)
        if outcome.changed and not outcome.failed:
            device.changed = True
            device.notified.update(step.notify)
        if outcome.failed and not step.ignore_errors:
            device.failed = f"{step.name}: {outcome.msg or 'failed'}"
            return False
        return True

    @staticmethod
    def _value(outcome: ops.Outcome) -> dict[str, Any]:
        return registered_value(outcome.changed, outcome.failed, outcome.skipped, outcome.msg,
                                outcome.data)

    def _record(self, device: str, step: Step, fields: dict[str, Any]) -> None:
        if (self.play.index, device, step.id) in self.settings.done:
            return  # journaled before the controller stopped: once is enough
        self.emit({"event": "task_done", "device": device, "task": step.id, "name": step.name,
                   **{k: v for k, v in fields.items() if v not in (None, "", False)}})

    def _call(self, task: Task, device: _Device, step: Step) -> ops.Outcome:
        try:
            op = ops.find(step.operation)
            args = templating.render_value(step.args, device.vars)
        except (templating.TemplateFailure, FleetError) as exc:
            return ops.Outcome(failed=True, msg=str(exc))
        problems = check_arguments(op, args)
        if problems:
            return ops.Outcome(failed=True, msg=problems[0][1])
        args = {k: coerce(v, op.params[k].annotation) for k, v in args.items()}
        if op.scope == "once":
            return self._call_once(step, op, args, device)
        return _invoke(op, self._context(task, device, step), args)

    def is_once(self, step: Step) -> bool:
        try:
            return ops.find(step.operation).scope == "once"
        except FleetError:
            return False

    def _call_once(self, step: Step, op: ops.Operation, args: dict[str, Any],
                   device: _Device) -> ops.Outcome:
        with self._once_lock:
            if step.id not in self._once:
                replay = self.settings.done.get((self.play.index, ONCE, step.id))
                if replay is not None:
                    self._once[step.id] = _outcome_of(replay)
                else:
                    ctx = self._context(None, device, step)
                    outcome = _invoke(op, ctx, args)
                    self._once[step.id] = outcome
                    self._record(ONCE, step, {"status": status_of(outcome, self.settings.check),
                                              "msg": outcome.msg})
            return self._once[step.id]

    def _context(self, task: Task | None, device: _Device, step: Step) -> ops.OpContext:
        def progress(what: str, fields: Mapping[str, Any]) -> None:
            self.show({**dict(fields), "event": "device_step", "device": device.name,
                       "step": f"{step.name}: {what}", "play": self.play.index})

        return ops.OpContext(project=self.settings.project,
                             host=task.host if task is not None else None,
                             check=self.settings.check, diff=self.settings.diff,
                             vars=dict(device.vars), progress=progress, task=task)


def _invoke(op: ops.Operation, ctx: ops.OpContext, args: dict[str, Any]) -> ops.Outcome:
    """Call the operation; an exception is a failed outcome, never a lost device."""
    try:
        outcome = op(ctx, **args)
    except FleetError as exc:
        return ops.Outcome(failed=True, msg=exc.line())
    except Exception as exc:  # a bug in an operation fails its task, not the play
        return ops.Outcome(failed=True, msg=f"{type(exc).__name__}: {exc}")
    if not isinstance(outcome, ops.Outcome):
        return ops.Outcome(failed=True, msg=f"{op.name} returned {type(outcome).__name__}, "
                                            "not an Outcome")
    return outcome


def _skipped(verdict: bool | str) -> ops.Outcome:
    if isinstance(verdict, str):
        return ops.Outcome(failed=True, msg=verdict)
    return ops.Outcome(skipped=True, msg="condition false")


STATUSES = ("ok", "changed", "failed", "skipped", "unpredictable", "rescued", "ignored")


def status_of(outcome: ops.Outcome, check: bool) -> str:
    if outcome.failed:
        return "failed"
    if outcome.skipped:
        return "skipped"
    if check and not outcome.predicted:
        return "unpredictable"
    return "changed" if outcome.changed else "ok"


def _outcome_of(event: Mapping[str, Any]) -> ops.Outcome:
    """A journaled task_done as the outcome it recorded (resume replays, never reruns)."""
    status = str(event.get("status"))
    value = dict(event.get("value") or {})
    data = {k: v for k, v in value.items() if k not in ("changed", "failed", "skipped", "msg")}
    return ops.Outcome(changed=status == "changed", failed=status == "failed",
                       skipped=status == "skipped", msg=str(event.get("msg", "")), data=data,
                       predicted=status != "unpredictable")
