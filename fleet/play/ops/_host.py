"""Running a domain Nornir task on the one host an operation is given.

The domain's device work is Nornir tasks (``agent_for(task)``, ``install_bundle``,
``health_task``); an operation has a `Host`. `run_on` wraps the host in a
one-host Nornir and runs the task there, on the host's own cached connection,
so consecutive tasks of a play reuse one SSH session per device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nornir.core import Nornir
from nornir.core.configuration import Config
from nornir.core.inventory import Defaults, Groups, Host, Hosts, Inventory
from nornir.core.processor import Processors
from nornir.core.task import MultiResult, Result, Task
from nornir.plugins.runners import SerialRunner

from fleet.errors import FleetError, UsageError
from fleet.play.operations import OpContext


def host_of(ctx: OpContext) -> Host:
    """The operation's device; a scope="host" operation always has one."""
    if ctx.host is None:
        raise UsageError("this operation runs per device, not once per play")
    return ctx.host


def solo(host: Host) -> Nornir:
    """A Nornir object holding only `host` (the same Host object: connections are shared)."""
    inventory = Inventory(hosts=Hosts({host.name: host}), groups=Groups(), defaults=Defaults())
    return Nornir(inventory=inventory, config=Config(), runner=SerialRunner())


def run_on(host: Host, func: Callable[..., Result], **params: Any) -> MultiResult:
    """Run the Nornir task `func` on `host`; an exception becomes a failed Result."""
    task = Task(func, nornir=solo(host), global_dry_run=False, processors=Processors(), **params)
    return task.start(host)


def reason(multi: MultiResult) -> str:
    """Why a failed task failed, in one line (FleetError's own line when it is one)."""
    first = multi[0]
    exc = first.exception
    if isinstance(exc, FleetError):
        return exc.line()
    if exc is not None:
        return f"{type(exc).__name__}: {exc}"
    return str(first.result)
