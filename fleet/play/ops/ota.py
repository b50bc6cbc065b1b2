"""``ota.install``: one signed OS bundle onto the task's device, fail-safe (A/B slots).

The rollout's own work (`fleet.rollout.update.OtaWork`): `fleet.ota.install_bundle`
decides with `fleet.decisions.decide_update` (what `fleet ota plan` shows), then
uploads, installs, reboots, verifies and commits or rolls back; the rollout's
health gate (`OtaWork.accept`) then judges the device on what it reported after
the reboot. Check mode runs the very same decision and stops there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nornir.core.task import MultiResult, Result, Task

from fleet.errors import ConfigError
from fleet.play.operations import OpContext, Outcome, operation
from fleet.play.ops._host import host_of, reason, run_on
from fleet.rollout.update import OtaWork


@operation("ota.install")
def install(ctx: OpContext, *, bundle: str, trials: int = 3, require_healthy: bool = False,
            reboot_timeout: float = 300.0) -> Outcome:
    """Install `bundle` (a path, relative to the project) unless the device already runs it.

    Check mode: the decision only (current -> target version in the diff, or the
    refusal the device's own guard would give)."""
    host = host_of(ctx)
    work = _work(ctx, bundle, reboot_timeout)
    params = {**work.params(), "trials": trials, "require_healthy": require_healthy,
              "dry_run": ctx.check}
    multi = run_on(host, _install, work=work, params=params)
    return _outcome(work, multi, ctx.check)


def _work(ctx: OpContext, bundle: str, reboot_timeout: float) -> OtaWork:
    path = Path(bundle) if Path(bundle).is_absolute() else ctx.project.root / bundle
    if not path.is_file():
        raise ConfigError(f"bundle {bundle} not found", where=str(path),
                          fix="build it with `fleet firmware build` or give its path")

    def progress(_device: str, step: str, fields: dict[str, Any]) -> None:
        # Step boundaries only: a play journals (and fsyncs) every progress line, and the
        # upload's byte counts are ~80 of them per device for nothing a resume needs.
        if "status" in fields:
            ctx.progress(f"ota.{step}", fields)

    work = OtaWork.for_bundle(ctx.project, path, progress)
    work.reboot_timeout = reboot_timeout
    return work


def _install(task: Task, work: OtaWork, params: dict[str, Any]) -> Result:
    return work.apply(task, work.bundle, **{k: v for k, v in params.items()
                                            if k != "bundle_path"})


def _outcome(work: OtaWork, multi: MultiResult, check: bool) -> Outcome:
    first = multi[0]
    report: dict[str, Any] = first.result if isinstance(first.result, dict) else {}
    data = {"before": report.get("before"), "after": report.get("after"),
            "target": work.version, "rolled_back": bool(report.get("rolled_back"))}
    diff = _diff(data) if first.changed and not first.failed else None
    if first.failed:
        why = str(report.get("reason") or reason(multi))
        return Outcome(changed=bool(first.changed), failed=True, msg=why, data=data, diff=diff)
    if check or not first.changed:
        return Outcome(changed=bool(first.changed), msg=str(report.get("reason", "")),
                       data=data, diff=diff)
    refused = work.accept(multi)  # the rollout's health gate: what the device reported
    return Outcome(changed=True, failed=refused is not None, msg=refused or "", data=data,
                   diff=diff)


def _diff(data: dict[str, Any]) -> dict[str, Any]:
    return {"software": {"before": data["before"], "after": data["after"]}}
