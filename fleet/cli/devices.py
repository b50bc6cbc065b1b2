"""fleet devices: the device registry (list, show, register, deregister, tag)."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from fleet.cli import options as o
from fleet.cli.context import CliContext, app_of

app = typer.Typer(
    help="The device registry: register, list, tag and deregister devices.", no_args_is_help=True
)

Status = Annotated[list[str] | None, typer.Option("--status", help="only this status")]
COLUMNS = [
    "Site",
    "Device",
    "Status",
    "Software",
    "Serial",
    "Last seen",
    "Cameras",
    "Tags",
]


def tags_text(tags: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" if v else k for k, v in sorted(tags.items()))


def _row(d: dict[str, Any]) -> dict[str, Any]:
    software = d["software_current"] or "-"
    if d["update_needed"]:
        software += f" → {d['software_target']}"
    return {
        "site": d["site"],
        "device": d["name"],
        "status": d["status"],
        "software": software,
        "serial": d["serial"] or "",
        "hardware": d["hardware"] or "",
        "last seen": d["last_seen"] or "never",
        "cameras": d["cameras"],
        "tags": tags_text(d["tags"]),
    }


@app.command("list")
def list_(
    ctx: typer.Context,
    site: o.Site = None,
    tag: o.Tag = None,
    limit: o.Limit = None,
    status: Status = None,
    json: o.Json = False,
) -> None:
    """List registered devices (filter by --site, --tag key or key=value, --limit, --status)."""
    from fleet.cli.render import grouped_table
    from fleet.registry import open_registry

    a = app_of(ctx)
    names = [n.strip() for n in (limit or "").split(",") if n.strip()]
    with a.guarded(), open_registry(a.project) as registry:
        devices = registry.list_devices(
            sites=site or (), tags=tag or (), names=names, statuses=status or ()
        )
    if json:
        a.output_json({"devices": devices})
        return
    a.output(grouped_table(f"{len(devices)} devices", COLUMNS, [_row(d) for d in devices],
                           whole=("Device", "Serial", "Last seen")))


@app.command()
def show(ctx: typer.Context, name: str, json: o.Json = False) -> None:
    """One device in full, with its recent history."""
    from fleet.registry import open_registry

    a = app_of(ctx)
    with a.guarded(), open_registry(a.project) as registry:
        device = registry.get_device(name)
        history = registry.history(name, limit=20)
    if device is None:
        a.abort(f"device '{name}' is not registered; see `fleet devices list`", 2)
    if json:
        a.output_json({"device": device, "history": history})
        return
    _print_device(a, device, history)


def _print_device(a: CliContext, device: dict[str, Any], history: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title=device["name"], title_justify="left", show_header=False)
    for key in (
        "site",
        "status",
        "provisioning",
        "connection",
        "serial",
        "hardware",
        "arch",
        "hostname",
        "port",
        "software_current",
        "software_target",
        "cert_fingerprint",
        "host_key_fingerprint",
        "last_seen",
        "cameras",
        "created_at",
    ):
        table.add_row(key, str(device.get(key) if device.get(key) is not None else "-"))
    table.add_row("tags", tags_text(device["tags"]) or "-")
    a.output(table)
    events = Table(title="history", title_justify="left", header_style="bold")
    for col in ("At", "Event", "Detail"):
        events.add_column(col)
    for event in history:
        detail = ", ".join(f"{k}={v}" for k, v in event["detail"].items())
        events.add_row(event["at"], event["event"], detail)
    a.output(events)


@app.command()
def register(
    ctx: typer.Context,
    inventory: o.Inventory = None,
    site: o.Site = None,
    group: o.Group = None,
    tag: o.Tag = None,
    limit: o.Limit = None,
    no_contact: Annotated[
        bool,
        typer.Option("--no-contact", help="only read the inventory; do not ask the devices"),
    ] = False,
    json: o.Json = False,
) -> None:
    """Register inventory devices in the registry (idempotent: run it again any time), then
    record what each reachable device reports: status, provisioning, software."""
    from fleet import inventory as inv
    from fleet.registry import devices, open_registry

    a = app_of(ctx)
    with a.guarded():
        nr = inv.select(a.project, inv.Selection.of(inventory, site, group, tag, limit))
        with open_registry(a.project) as registry:
            result = devices.register(a.project, registry, nr)
            # A registry that says AWAITING_PROVISIONING for a device answering right now is wrong.
            result["devices"] = [] if no_contact else devices.refresh(registry, nr)
    if json:
        a.output_json(result)
        return
    a.display_success(
        f"✓ {len(result['created'])} registered, {len(result['updated'])} "
        f"updated, {len(result['unchanged'])} unchanged"
        + (
            f", {len(result['certificates'])} certificate(s) recorded"
            if result["certificates"]
            else ""
        )
    )
    if result["devices"]:
        a.display_info(_contact_line(result["devices"]))
    _warn_outdated(a, result["devices"])


def _warn_outdated(a: CliContext, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        if row.get("warning"):
            a.display_warning(f"{row['name']}: {row['warning']}")


def _contact_line(rows: list[dict[str, Any]]) -> str:
    """`asked the devices: 5 ONLINE, 1 OFFLINE (lisbon-02)`."""
    statuses = sorted({r["status"] for r in rows})
    parts = [f"{sum(r['status'] == s for r in rows)} {s}" for s in statuses]
    offline = [r["name"] for r in rows if r["status"] == "OFFLINE"]
    return "asked the devices: " + ", ".join(parts) + (
        f" ({', '.join(offline)}; see `fleet devices refresh` later)" if offline else ""
    )


@app.command()
def refresh(
    ctx: typer.Context,
    inventory: o.Inventory = None,
    site: o.Site = None,
    group: o.Group = None,
    tag: o.Tag = None,
    limit: o.Limit = None,
    json: o.Json = False,
) -> None:
    """Ask registered devices over SSH who they are: status, software, last seen."""
    from fleet import inventory as inv
    from fleet.cli.render import grouped_table
    from fleet.registry import devices, open_registry

    a = app_of(ctx)
    with a.guarded():
        nr = inv.select(a.project, inv.Selection.of(inventory, site, group, tag, limit))
        with open_registry(a.project) as registry:
            rows = devices.refresh(registry, nr)
    if json:
        a.output_json({"devices": rows})
    else:
        _warn_outdated(a, rows)
        table = [{**r, "device": r["name"], "software": r["software"] or "-"} for r in rows]
        a.output(
            grouped_table(
                f"{len(rows)} devices refreshed",
                ["Site", "Device", "Status", "Software", "Reason"],
                table,
            )
        )
    if any(r["status"] == "OFFLINE" for r in rows):
        raise typer.Exit(1)


def _passphrase_if_needed(a: CliContext) -> bytes | None:
    """FLEET_CA_PASSPHRASE, a prompt on a terminal, or None (revocation then says why)."""
    value = os.environ.get("FLEET_CA_PASSPHRASE")
    if value:
        return value.encode()
    if sys.stdin.isatty() and (a.project.certs / "ca.crt").exists():
        return str(
            typer.prompt("Fleet CA passphrase (to revoke the certificate)", hide_input=True)
        ).encode()
    return None


@app.command()
def deregister(
    ctx: typer.Context,
    name: str,
    remove_cameras: Annotated[
        bool, typer.Option("--remove-cameras", help="also remove the device's cameras")
    ] = False,
    json: o.Json = False,
) -> None:
    """Deregister a device: revoke its certificate, unpin its host key, keep its history."""
    from fleet.registry import devices, open_registry

    a = app_of(ctx)
    with a.guarded(), open_registry(a.project) as registry:
        if registry.get_device(name) is None:
            a.abort(f"device '{name}' is not registered; see `fleet devices list`", 2)
        result = devices.deregister(
            a.project,
            registry,
            name,
            passphrase=_passphrase_if_needed(a),
            remove_cameras=remove_cameras,
        )
    if json:
        a.output_json(result)
        return
    revoked = (
        f"certificate revoked ({', '.join(result['revoked_serials'])})"
        if result["revoked_serials"]
        else "no certificate to revoke"
    )
    key = "host key unpinned" if result["host_key_removed"] else "no pinned host key"
    a.display_success(
        f"✓ {name} deregistered: {revoked}; {key}; "
        f"{len(result['cameras_removed'])} camera(s) removed"
    )


@app.command()
def tag(
    ctx: typer.Context,
    name: str,
    tags: Annotated[list[str] | None, typer.Argument(help="key=value (or key) tags to set")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="tag key to drop")] = None,
    json: o.Json = False,
) -> None:
    """Set tags on a device: `fleet devices tag berlin-01 ring=canary floor=2`."""
    from fleet.registry import hosts, open_registry

    a = app_of(ctx)
    with a.guarded(), open_registry(a.project) as registry:
        device = registry.tag_device(name, hosts.parse_tags(tags or ()), remove or ())
    if json:
        a.output_json({"device": device["name"], "tags": device["tags"]})
        return
    a.display_success(f"✓ {name}: {tags_text(device['tags']) or 'no tags'}")
