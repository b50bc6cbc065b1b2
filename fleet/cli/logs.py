"""fleet logs: export redacted, verified log bundles from devices."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fleet.cli import options as o
from fleet.cli.context import app_of

if TYPE_CHECKING:
    from fleet.cli.context import CliContext
    from fleet.logs import Bundle

app = typer.Typer(help="Device logs: redacted bundles with a verified manifest.",
                  no_args_is_help=True)


@app.command()
def export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="writes OUT/<site>/<device>-<time>.tar.gz")],
    inventory: o.Inventory = None, site: o.Site = None, group: o.Group = None,
    tag: o.Tag = None, limit: o.Limit = None,
    since: Annotated[str | None, typer.Option(help="only logs newer than: 24h, 7d, ISO")] = "24h",
    max_bytes: Annotated[str, typer.Option("--max-bytes",
                                           help="per-device cap on logs (newest kept)")] = "64MB",
    s3: Annotated[str | None, typer.Option("--s3", help="upload to s3://bucket/prefix")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-c", min=1,
                                                    help="devices at once (fleet.yaml)")] = None,
    json: o.Json = False,
) -> None:
    """Collect agent, runtime, application, provisioning and system logs from every
    selected device in parallel. Secrets are redacted on the device.

    Exit codes: 0 every bundle exported, 1 some failed, 2 some devices unreachable.
    """
    from fleet import inventory as inv
    from fleet import logs
    from fleet.cli.render import ProgressProcessor

    a = app_of(ctx)
    with a.guarded():
        options = logs.ExportOptions(out=out, since=since or None,
                                     max_bytes=logs.parse_size(max_bytes), s3=s3)
        options.check()
        nr = inv.select(a.project, inv.Selection.of(inventory, site, group, tag, limit),
                        num_workers=concurrency)
        bundles = logs.export(nr, options, processors=[ProgressProcessor(a.err, "logs")])
    summary = logs.summarize(bundles)
    if json:
        a.output_json({"bundles": [b.as_json() for b in bundles], "summary": summary})
    else:
        _render(a, bundles, summary, out)
    raise typer.Exit(2 if summary["unreachable"] else 1 if summary["failed"] else 0)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _shown(path: Path | None, out: Path) -> str:
    if path is None:
        return "-"
    try:
        return str(path.relative_to(out))
    except ValueError:
        return str(path)


def _render(a: CliContext, bundles: list[Bundle], summary: dict[str, Any], out: Path) -> None:
    from fleet.cli.render import grouped_table, styled

    rows = []
    for b in bundles:
        span = b.time_range or {}
        rows.append({"site": b.site, "device": b.device,
                     "bundle": _shown(b.path, out),
                     "size": (_size(b.bytes) + (" (logs capped)" if b.truncated else ""))
                     if b.ok else "-",
                     "logs span": f"{span.get('start') or '-'} → {span.get('end') or '-'}",
                     "status": styled("ok") if b.ok else styled("fail"), "error": b.error or ""})
    title = (f"logs: {summary['exported']}/{summary['devices']} bundles verified in {out}, "
             f"{_size(summary['bytes'])} for {_size(summary['log_bytes'])} of logs")
    # No Site column: the bundle path starts with it, and the paths and times need the room.
    a.output(grouped_table(title, ["Device", "Bundle", "Size", "Logs span", "Status", "Error"],
                           rows, whole=("Device", "Bundle", "Logs span")))
    if summary["unreachable"]:
        a.display_warning(f"unreachable: {', '.join(summary['unreachable'])}")
    if summary["failed"]:
        a.display_warning(f"failed: {', '.join(summary['failed'])}")
    if any(b.s3_uri for b in bundles):
        a.display_info(f"uploaded {sum(1 for b in bundles if b.s3_uri)} bundle(s) to S3")
