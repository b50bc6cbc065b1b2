"""fleet health: one verdict per device; exit 0 healthy, 1 degraded/failing/revoked,
2 unreachable."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from fleet.cli import options as o
from fleet.cli.context import app_of

if TYPE_CHECKING:  # typing only: --help stays instant
    from nornir.core import Nornir

    from fleet.cli.context import CliContext
    from fleet.health import DeviceHealth

Source = Annotated[str, typer.Option(
    "--source", help="ssh: ask every device now; mqtt: their latest heartbeats (no SSH)")]
Watch = Annotated[Optional[float], typer.Option(
    "--watch", min=0.5, metavar="SECONDS", help="check again every SECONDS until Ctrl-C")]


def command(ctx: typer.Context, inventory: o.Inventory = None, site: o.Site = None,
            group: o.Group = None, tag: o.Tag = None, limit: o.Limit = None,
            json: o.Json = False, concurrency: o.Concurrency = None,
            source: Source = "ssh", watch: Watch = None) -> None:
    """Check every selected device in parallel and print a table grouped by site.

    With --source mqtt the answer comes from the devices' latest heartbeats on
    the broker; a device silent for 3 heartbeat intervals is offline.
    A device whose certificate the fleet CRL lists is `revoked`.
    Exit codes: 0 all healthy, 1 any degraded, failing or revoked, 2 any unreachable or offline.
    """
    from fleet import inventory as inv

    a = app_of(ctx)
    if source not in ("ssh", "mqtt"):
        a.abort(f"unknown --source '{source}'; use ssh or mqtt", 2)
    with a.guarded():
        nr = inv.select(a.project, inv.Selection.of(inventory, site, group, tag, limit),
                        num_workers=concurrency)
    code = 0
    try:
        while True:
            code = _round(a, nr, source, json, watch)
            if watch is None:
                break
            time.sleep(watch)  # --watch: the pause between rounds is what was asked for
    except KeyboardInterrupt:
        pass
    finally:
        nr.close_connections(on_failed=True)  # --watch kept them between rounds
    raise typer.Exit(code)


def _round(a: CliContext, nr: Nornir, source: str, json: bool, watch: float | None) -> int:
    from fleet import health
    from fleet.cli.render import ProgressProcessor

    with a.guarded():
        if source == "mqtt":
            from fleet import heartbeats  # the MQTT client: not for a sweep over SSH

            hosts = [(n, str(h.get("site", "?"))) for n, h in nr.inventory.hosts.items()]
            reports = heartbeats.sweep(a.project, hosts)
        else:
            reports = health.sweep(a.project, nr, processors=[ProgressProcessor(a.err, "health")],
                                   keep_connections=watch is not None)
    if json:
        a.output_json({"devices": [r.as_json() for r in reports], "source": source,
                       "time": time.time(), "summary": health.summarize(reports)})
    else:
        if watch is not None:
            a.out.clear()
            a.display_info(f"every {watch:g}s from {source}, {time.strftime('%H:%M:%S')}; "
                           "Ctrl-C to stop")
        _render(a, reports)
    return health.exit_code(reports)


def _apps(r: DeviceHealth) -> str:
    """``color 1.2.0 done 14.9fps [door, yard!]``: ``!`` marks a camera not streaming."""
    shown = []
    for app in r.apps:
        words = [app["name"], app["version"], app["state"], f"{app['fps'] or 0:.1f}fps"]
        cams = ", ".join(n + ("" if up else "!") for n, up in sorted(app["cameras"].items()))
        shown.append(" ".join(w for w in words if w) + (f" [{cams}]" if cams else ""))
    return ", ".join(shown) or "-"


def _cert(r: DeviceHealth) -> str:
    cert = r.check("certificate")
    if cert.get("revoked"):
        return "revoked"
    days = cert.get("days_left")
    return f"{days:.0f}d" if days is not None else "-"


def _render(a: CliContext, reports: list[DeviceHealth]) -> None:
    from fleet import health
    from fleet.cli.render import grouped_table, styled

    rows = []
    for r in reports:
        disk, mem = r.check("disk"), r.check("memory")
        rows.append({"site": r.site, "device": r.name, "software": r.software or "-",
                     "slot": r.slot or "-",
                     "disk": f"{disk['used_pct']:.0f}%" if "used_pct" in disk else "-",
                     "memory": f"{mem['used_pct']:.0f}%" if "used_pct" in mem else "-",
                     "apps": _apps(r), "cert": _cert(r),
                     "verdict": styled(r.verdict), "reason": r.reason or ""})
    s = health.summarize(reports)
    title = (f"fleet health: {s['healthy']}/{s['total']} healthy, {s['degraded']} degraded, "
             f"{s['failing']} failing, {s['unreachable']} unreachable"
             + (f", {s['offline']} offline" if s["offline"] else "")
             + (f", {s['revoked']} revoked" if s["revoked"] else ""))
    a.output(grouped_table(title, ["Site", "Device", "Software", "Slot", "Disk", "Memory",
                                   "Apps", "Cert", "Verdict", "Reason"], rows))
