"""Playbook operations: one typed, decorated function per operation, found by name.

A task in a playbook names one operation and gives its arguments. The
operation is a Python function whose keyword-only parameters *are* those
arguments: their names, annotations and defaults are read from the signature,
so an unknown argument, a missing one or one of the wrong type is refused
before the play starts. It receives an `OpContext` and returns an `Outcome`.

In check mode (``ctx.check``) an operation changes nothing anywhere and says
what it would change: ``changed`` and, for ``--diff``, a ``diff``. One that
cannot know without acting returns ``Outcome.unpredictable(why)`` instead of
guessing.

A project adds its own the same way (Nornir's habit: a task is a function)::

    from fleet.play.operations import OpContext, Outcome, operation

    @operation("site.label")
    def label(ctx: OpContext, *, text: str, upper: bool = False) -> Outcome:
        if ctx.check:
            return Outcome(changed=True, diff={"label": {"after": text}})
        ...
        return Outcome(changed=True, data={"label": text})

Built-in operations are registered by module path (imported when a playbook
names them, so ``fleet --help`` stays fast); see `BUILTIN`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from fleet.errors import FleetError

if TYPE_CHECKING:
    from nornir.core.inventory import Host
    from nornir.core.task import Task

    from fleet.project import Project

Scope = Literal["host", "once"]


@dataclass(frozen=True)
class OpContext:
    """What an operation gets besides its arguments.

    `host` is the device the task runs for; None for a ``scope="once"``
    operation (run once per play, e.g. importing a site's cameras from a CSV).
    `vars` are the resolved variables for this host (or the play's, for once).
    `progress(step, fields)` reports a step to the play's output and journal.
    `task` is the Nornir task running this host's play (None for once): reach the
    device with ``fleet.agent.agent_for(ctx.task)``, compose with ``ctx.task.run(...)``.
    """

    project: Project
    host: Host | None
    check: bool = False
    diff: bool = False
    vars: Mapping[str, Any] = field(default_factory=dict)
    progress: Callable[[str, Mapping[str, Any]], None] = lambda step, fields: None
    task: Task | None = None


@dataclass(frozen=True)
class Outcome:
    """What a task did (or, in check mode, would do) on one host.

    `data` is what ``register:`` stores (plain JSON values; never a secret).
    `diff` maps what changes to ``{"before": ..., "after": ...}``.
    """

    changed: bool = False
    failed: bool = False
    skipped: bool = False
    msg: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    diff: Mapping[str, Any] | None = None
    predicted: bool = True

    @classmethod
    def unpredictable(cls, why: str) -> Outcome:
        """Check mode only: this operation cannot tell what it would change."""
        return cls(predicted=False, msg=why)


@dataclass(frozen=True)
class Param:
    name: str
    annotation: Any          # the resolved type (str, int, float, bool, list[str], ...)
    required: bool
    default: Any = None


@dataclass(frozen=True)
class Operation:
    name: str
    func: Callable[..., Outcome]
    scope: Scope
    params: Mapping[str, Param]
    doc: str = ""

    def __call__(self, ctx: OpContext, **arguments: Any) -> Outcome:
        return self.func(ctx, **arguments)


class UnknownOperation(FleetError):
    """A playbook names an operation nobody registered (a bad playbook: exit 2)."""

    exit_code = 2


# name -> "module" that defines it with @operation (imported on first use), or the Operation.
BUILTIN: dict[str, str] = {
    "provision.archive": "fleet.play.ops.provision",
    "provision.usb": "fleet.play.ops.provision",
    "devices.register": "fleet.play.ops.devices",
    "cameras.import": "fleet.play.ops.cameras",
    "cameras.probe": "fleet.play.ops.cameras",
    "ota.install": "fleet.play.ops.ota",
    "health.check": "fleet.play.ops.health",
    "logs.export": "fleet.play.ops.logs",
    "agent.reboot": "fleet.play.ops.agent",
    "wait_for": "fleet.play.ops.agent",
    "assert": "fleet.play.ops.checks",
    "app.deploy": "fleet.play.ops.apps",
    "app.remove": "fleet.play.ops.apps",
}
_REGISTRY: dict[str, Operation] = {}


def operation(name: str, *, scope: Scope = "host") -> Callable[[Callable[..., Outcome]], Operation]:
    """Register `func` as the operation `name`; its keyword-only parameters are its arguments."""

    def register(func: Callable[..., Outcome]) -> Operation:
        op = Operation(name=name, func=func, scope=scope, params=_params(func),
                       doc=inspect.getdoc(func) or "")
        _REGISTRY[name] = op
        return op

    return register


def find(name: str) -> Operation:
    """The operation called `name`: registered already, or a built-in imported now."""
    if name not in _REGISTRY and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name not in _REGISTRY:
        raise UnknownOperation(f"unknown operation {name!r}",
                               fix=f"use one of: {', '.join(sorted(names()))}")
    return _REGISTRY[name]


def names() -> list[str]:
    return sorted({*BUILTIN, *_REGISTRY})


def _params(func: Callable[..., Outcome]) -> dict[str, Param]:
    hints = inspect.get_annotations(func, eval_str=True)
    found: dict[str, Param] = {}
    for p in inspect.signature(func).parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        required = p.default is inspect.Parameter.empty
        found[p.name] = Param(p.name, hints.get(p.name, Any), required,
                              None if required else p.default)
    return found
