"""``agent.reboot`` and ``wait_for``: restart a device, and wait until it is back and healthy.

`agent.reboot` uses the device's restarter (`fleet.reboot.restarter_for`: the
agent's reboot, or the host's ``power_cycle`` command) and returns once the
device reports a new boot. `wait_for` knocks until the device answers and its
health verdict passes, within a timeout.
"""

from __future__ import annotations

import time

from nornir.core.inventory import Host
from nornir.core.task import Result, Task

from fleet.agent import agent_for
from fleet.health import DeviceHealth
from fleet.play.operations import OpContext, Outcome, operation
from fleet.play.ops import health as health_op
from fleet.play.ops._host import host_of, reason, run_on
from fleet.reboot import disconnect, restarter_for


@operation("agent.reboot")
def reboot(ctx: OpContext, *, timeout: float = 300.0) -> Outcome:
    """Reboot the device and wait (up to `timeout` seconds) until it reports a new boot.

    Check mode: always a change (the boot counter goes up by one)."""
    host = host_of(ctx)
    before = run_on(host, _boots)
    if before.failed:
        return Outcome(failed=True, msg=reason(before))
    boots = int(before[0].result)
    if ctx.check:
        return Outcome(changed=True, diff={"boots": {"before": boots, "after": boots + 1}})
    done = run_on(host, _reboot, timeout=timeout)
    if done.failed:
        return Outcome(changed=True, failed=True, msg=reason(done))
    after = int(done[0].result)
    return Outcome(changed=True, data={"boots": after},
                   diff={"boots": {"before": boots, "after": after}})


def _boots(task: Task) -> Result:
    return Result(task.host, result=agent_for(task).slots().boots)


def _reboot(task: Task, timeout: float) -> Result:
    restarter_for(task.host, timeout).reboot(task)
    return _boots(task)


@operation("wait_for")
def wait_for(ctx: OpContext, *, timeout: float = 300.0, healthy: bool = True,
             allow_degraded: bool = False, poll: float = 2.0) -> Outcome:
    """Wait until the device answers (and, with `healthy`, passes `health.check`'s verdict).

    Check mode: one look, no waiting; never a change."""
    host = host_of(ctx)
    deadline = time.monotonic() + timeout
    while True:
        report = health_op.read(ctx)
        problems = _problems(report, healthy, allow_degraded)
        if not problems or ctx.check:
            msg = "check mode: looked once, did not wait" if ctx.check else ""
            return Outcome(msg=msg, data=health_op.summary(report))
        if time.monotonic() + poll > deadline:
            return Outcome(failed=True, data=health_op.summary(report),
                           msg=f"not back within {timeout:.0f}s: {'; '.join(problems)}")
        _forget(host)
        time.sleep(poll)  # the device is rebooting or degraded: knock again shortly


def _problems(report: DeviceHealth, healthy: bool, allow_degraded: bool) -> list[str]:
    if report.verdict in ("unreachable", "offline"):
        return [f"{report.verdict}: {report.reason}"]
    return health_op.verdict_problems(report, allow_degraded) if healthy else []


def _forget(host: Host) -> None:
    """Drop a connection that may have died with the reboot; the next look reconnects."""
    run_on(host, _disconnect)


def _disconnect(task: Task) -> Result:
    disconnect(task)
    return Result(task.host)
