"""``app.deploy`` and ``app.remove``: an application release onto the task's device, or off it.

`app.deploy` is the rollout's application work (`fleet.apps.work.AppWork`):
`deploy` decides with `fleet.apps.decide.decide_app` (what `fleet app plan`
shows), sends only the blobs the device lacks, stages, switches and lets the
device's health gate commit or roll back; then the rollout's acceptance
(`AppWork.accept`) judges what the device reported. Check mode runs `decide`
only: current -> target version, the bytes to send, or the refusal (platform,
disk, configuration). `app.remove` is `fleet app remove` for one device.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from nornir.core.task import MultiResult, Result, Task

from fleet.apps.actions import app_action
from fleet.apps.work import AppWork
from fleet.errors import ConfigError
from fleet.play.operations import OpContext, Outcome, operation
from fleet.play.ops._host import host_of, reason, run_on

# Opening a bundle verifies every file into the blob cache: once per bundle and process,
# not once per device of the play.
_WORKS: dict[tuple[Path, tuple[str, ...], tuple[tuple[str, float], ...]], AppWork] = {}
_OPENING = threading.Lock()


@operation("app.deploy")
def deploy(ctx: OpContext, *, bundle: str, sets: list[str] | None = None,
           health: dict[str, float] | None = None) -> Outcome:
    """Deploy the signed application `bundle` (``name=value`` `sets` as `fleet app deploy -e`;
    `health` overrides the manifest's gate thresholds, e.g. ``{window_s: 10}``).

    Check mode: the decision only (``app NAME``: current -> target version)."""
    host = host_of(ctx)
    work = _work(ctx, bundle, sets or [], health or {})
    if ctx.check:
        return _predicted(work, run_on(host, work.decide))
    multi = run_on(host, _deploy, work=work)
    return _done(work, multi)


def _work(ctx: OpContext, bundle: str, sets: list[str], health: dict[str, float]) -> AppWork:
    path = (Path(bundle) if Path(bundle).is_absolute() else ctx.project.root / bundle).resolve()
    if not path.is_file():
        raise ConfigError(f"application bundle {bundle} not found", where=str(path),
                          fix="build it with `fleet app build` or give its path")
    with _OPENING:
        key = (path, tuple(sets), tuple(sorted(health.items())))
        if key not in _WORKS:
            _WORKS[key] = AppWork.for_bundle(ctx.project, path, sets=sets, health=health)
        return _WORKS[key]


def _deploy(task: Task, work: AppWork) -> Result:
    return work.deploy(task)


def _diff(work: AppWork, before: Any, after: Any) -> dict[str, Any]:
    return {f"app {work.name}": {"before": before, "after": after}}


def _predicted(work: AppWork, multi: MultiResult) -> Outcome:
    row: dict[str, Any] = multi[0].result if isinstance(multi[0].result, dict) else {}
    state = row.get("state")
    if multi.failed or state in ("offline", "refused"):
        return Outcome(failed=True, msg=str(row.get("reason") or reason(multi)))
    data = {k: row.get(k) for k in ("current", "target", "send_bytes", "free_after")}
    if state == "current":
        return Outcome(msg=str(row.get("reason", "")), data=data)
    return Outcome(changed=True, data=data, diff=_diff(work, row.get("current"), work.version))


def _done(work: AppWork, multi: MultiResult) -> Outcome:
    first = multi[0]
    report: dict[str, Any] = first.result if isinstance(first.result, dict) else {}
    data = {k: report.get(k) for k in ("state", "before", "after", "sent_bytes", "sent_blobs")}
    # where the device's time went, step by step (seconds), for a `register`ed look
    data["steps"] = {s["step"]: s.get("seconds") for s in report.get("steps", [])}
    if first.failed:
        return Outcome(failed=True, msg=str(report.get("reason") or reason(multi)), data=data)
    if not first.changed:
        return Outcome(msg=str(report.get("reason", "")), data=data)
    refused = work.accept(multi)  # the rollout's acceptance: what the device reported
    return Outcome(changed=True, failed=refused is not None, msg=refused or "", data=data,
                   diff=_diff(work, report.get("before"), report.get("after")))


@operation("app.remove")
def remove(ctx: OpContext, *, app: str) -> Outcome:
    """Stop the application `app` on the device and delete its versions (absent: no change).

    Check mode: reads the device's applications and says whether it would remove one."""
    host = host_of(ctx)
    if ctx.check:
        return _would_remove(app, run_on(host, _installed, app=app))
    multi = run_on(host, app_action, verb="remove", app=app)
    row: dict[str, Any] = multi[0].result if isinstance(multi[0].result, dict) else {}
    if multi.failed:
        return Outcome(failed=True, msg=str(row.get("reason") or reason(multi)))
    if row.get("state") == "absent":
        return Outcome(msg=f"{app} is not installed")
    return Outcome(changed=True, diff={f"app {app}": {"before": "installed", "after": None}})


def _installed(task: Task, app: str) -> Result:
    from fleet.agent import agent_for

    return Result(task.host, result=agent_for(task).app_list().get(app) is not None)


def _would_remove(app: str, multi: MultiResult) -> Outcome:
    if multi.failed:
        return Outcome(failed=True, msg=reason(multi))
    if not multi[0].result:
        return Outcome(msg=f"{app} is not installed")
    return Outcome(changed=True, diff={f"app {app}": {"before": "installed", "after": None}})
