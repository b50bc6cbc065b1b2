"""``logs.export``: the device's logs as one verified bundle on the controller (and S3).

`fleet.logs.export_task` for the task's device: streamed, checked against the
agent's manifest, stored under `out` (and uploaded when `s3` is given). The device
changes nothing; check mode names the folder the bundle would go to.
"""

from __future__ import annotations

from pathlib import Path

from fleet import logs
from fleet.play.operations import OpContext, Outcome, operation
from fleet.play.ops._host import host_of, reason, run_on


@operation("logs.export")
def export(ctx: OpContext, *, out: str = ".fleet/logs", since: str | None = None,
           max_bytes: str = "20MB", s3: str | None = None) -> Outcome:
    """Export the device's logs to `out` (relative to the project), `since` a time or age."""
    host = host_of(ctx)
    folder = Path(out) if Path(out).is_absolute() else ctx.project.root / out
    options = logs.ExportOptions(folder, since, logs.parse_size(max_bytes), s3)
    options.check()
    if ctx.check:
        return Outcome(changed=True, diff={"bundle": {"before": None, "after": str(folder)}})
    folder.mkdir(parents=True, exist_ok=True)
    client = logs.s3_client() if s3 else None
    multi = run_on(host, logs.export_task, options=options, s3_client=client)
    if multi.failed:
        return Outcome(failed=True, msg=reason(multi))
    bundle: logs.Bundle = multi[0].result
    data = {k: v for k, v in bundle.as_json().items() if k in
            ("path", "bytes", "log_bytes", "files", "truncated", "s3_uri")}
    return Outcome(changed=True, data=data,
                   diff={"bundle": {"before": None, "after": data["path"]}})
