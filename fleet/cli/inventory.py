"""fleet inventory: list and check inventories."""

from __future__ import annotations

import typer

from fleet.cli import options as o
from fleet.cli.context import app_of

app = typer.Typer(help="Inspect inventories (sites, groups, devices).", no_args_is_help=True)


@app.command("list")
def list_(ctx: typer.Context, inventory: o.Inventory = None, site: o.Site = None,
          group: o.Group = None, tag: o.Tag = None, limit: o.Limit = None,
          json: o.Json = False) -> None:
    """List devices, grouped by site."""
    from fleet import inventory as inv
    from fleet.cli.render import grouped_table

    a = app_of(ctx)
    with a.guarded():
        nr = inv.select(a.project, inv.Selection.of(inventory, site, group, tag, limit),
                        allow_empty=True)
    with inv.bulk_allocation():  # a listing of 100,000 devices is 100,000 more dicts
        hosts = sorted((inv.describe(h) for h in nr.inventory.hosts.values()),
                       key=lambda d: (d["site"] or "", d["name"]))
        if json:
            a.output_json({"devices": hosts})
            return
    rows = [{"site": h["site"], "device": h["name"], "address": f"{h['hostname']}:{h['port']}",
             "serial": h["data"].get("serial", ""), "hardware": h["data"].get("hardware", ""),
             "arch": h["data"].get("arch", ""), "tags": ",".join(h["data"].get("tags") or [])}
            for h in hosts]
    a.output(grouped_table(f"{len(rows)} devices", ["Site", "Device", "Address", "Serial",
                                                    "Hardware", "Arch", "Tags"], rows,
                           whole=("Device", "Address", "Serial", "Hardware")))


@app.command("check")
def check(ctx: typer.Context, inventory: o.Inventory = None, json: o.Json = False) -> None:
    """Validate an inventory; every problem is printed with its file and line."""
    from rich.markup import escape

    from fleet import inventory as inv
    from fleet.errors import printable

    a = app_of(ctx)
    with a.guarded():
        directory = inv.inventory_dir(a.project, inventory)
    problems = inv.check(directory)
    if json:
        a.output_json({"inventory": str(directory), "problems": problems, "ok": not problems})
    else:
        for line in problems:
            a.err.print(f"[red]✗[/red] {escape(printable(line))}", markup=True, highlight=False)
        if not problems:
            a.display_success(f"✓ {directory}: no problems")
    if problems:
        raise typer.Exit(1)
