"""fleet health: one verdict per device; exit 0 healthy, 1 degraded/failing, 2 unreachable."""

from __future__ import annotations

import typer

from fleet.cli import options as o
from fleet.cli.application import app_of
from fleet.errors import FleetError


def command(ctx: typer.Context, inventory: o.Inventory = None, site: o.Site = None,
            group: o.Group = None, tag: o.Tag = None, limit: o.Limit = None,
            json: o.Json = False, concurrency: o.Concurrency = None) -> None:
    """Check every selected device in parallel and print a table grouped by site.

    Exit codes: 0 all healthy, 1 any degraded or failing, 2 any unreachable.
    """
    from fleet import health, inventory as inv
    from fleet.render import ProgressProcessor

    a = app_of(ctx)
    try:
        nr = inv.select(a.project, inv.Selection.of(inventory, site, group, tag, limit),
                        num_workers=concurrency)
    except FleetError as exc:
        a.fail(exc)
    reports = health.sweep(a.project, nr, processors=[ProgressProcessor(a.err, "health")])
    if json:
        a.output_json({"devices": [r.as_json() for r in reports],
                       "summary": health.summarize(reports)})
    else:
        _render(a, reports)
    raise typer.Exit(health.exit_code(reports))


def _render(a, reports) -> None:  # type: ignore[no-untyped-def]
    from fleet import health
    from fleet.render import grouped_table, styled

    rows = []
    for r in reports:
        disk, mem = r.check("disk"), r.check("memory")
        rows.append({"site": r.site, "device": r.name, "software": r.software or "-",
                     "slot": r.slot or "-",
                     "disk": f"{disk['used_pct']:.0f}%" if "used_pct" in disk else "-",
                     "memory": f"{mem['used_pct']:.0f}%" if "used_pct" in mem else "-",
                     "verdict": styled(r.verdict), "reason": r.reason or ""})
    s = health.summarize(reports)
    title = (f"fleet health: {s['healthy']}/{s['total']} healthy, {s['degraded']} degraded, "
             f"{s['failing']} failing, {s['unreachable']} unreachable")
    a.output(grouped_table(title, ["Site", "Device", "Software", "Slot", "Disk", "Memory",
                                   "Verdict", "Reason"], rows))
