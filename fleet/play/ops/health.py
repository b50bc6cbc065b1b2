"""``health.check``: the device's health report, as `fleet health` judges it.

The same agent checks, clock skew, registry version target and CRL lookup as the
sweep (`fleet.health`), for the task's one device. It fails the device when the
verdict is not healthy (``allow_degraded`` lets ``degraded`` pass), and asserts
the thresholds given as arguments. Read-only: check mode runs it for real.
"""

from __future__ import annotations

from typing import Any

from nornir.core.task import MultiResult

from fleet import health
from fleet.health import DeviceHealth
from fleet.play.operations import OpContext, Outcome, operation
from fleet.play.ops._host import host_of, run_on, solo

PASSING = {"healthy"}


@operation("health.check")
def check(ctx: OpContext, *, allow_degraded: bool = False, max_disk_pct: float | None = None,
          max_mem_pct: float | None = None, software: str | None = None,
          apps_running: list[str] | None = None) -> Outcome:
    """Fail the device unless it is healthy and meets every threshold given."""
    report = read(ctx)
    problems = verdict_problems(report, allow_degraded) + threshold_problems(
        report, max_disk_pct=max_disk_pct, max_mem_pct=max_mem_pct, software=software,
        apps_running=apps_running or [])
    return Outcome(failed=bool(problems), msg="; ".join(problems), data=summary(report))


def read(ctx: OpContext) -> DeviceHealth:
    """The one device's report, with what only the controller can judge added."""
    host = host_of(ctx)
    flags = health.agent_flags(ctx.project)
    skew = float(ctx.project.config["health"]["clock_skew_warn_s"])
    multi: MultiResult = run_on(host, health.health_task, flags=flags, skew_warn_s=skew)
    report = health.to_health(solo(host), host.name, multi)
    health.apply_targets([report], health.software_targets(ctx.project, [host.name]))
    health.apply_revocations(ctx.project, [report])
    return report


def verdict_problems(report: DeviceHealth, allow_degraded: bool) -> list[str]:
    passing = PASSING | ({"degraded"} if allow_degraded else set())
    if report.verdict in passing:
        return []
    return [f"{report.verdict}: {report.reason}" if report.reason else report.verdict]


def threshold_problems(report: DeviceHealth, *, max_disk_pct: float | None,
                       max_mem_pct: float | None, software: str | None,
                       apps_running: list[str]) -> list[str]:
    problems = []
    for name, limit in (("disk", max_disk_pct), ("memory", max_mem_pct)):
        used = report.check(name).get("used_pct")
        if limit is not None and (used is None or float(used) > limit):
            problems.append(f"{name} {used}% used, above {limit}%")
    if software is not None and report.software != software:
        problems.append(f"runs {report.software}, expected {software}")
    for app in apps_running:
        status = report.check(f"app:{app}").get("status")
        if status != "ok":
            problems.append(f"application {app} is {status or 'not installed'}")
    return problems


def summary(report: DeviceHealth) -> dict[str, Any]:
    """What ``register:`` keeps: verdict, reason, software and each check's status."""
    return {"verdict": report.verdict, "reason": report.reason, "software": report.software,
            "slot": report.slot,
            "checks": {str(c.get("name")): str(c.get("status")) for c in report.checks}}
