"""fleet cameras: import from CSV, list, show, remove, probe. Passwords always show as ***."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fleet.cli import options as o
from fleet.cli.context import CliContext, app_of

app = typer.Typer(
    help="Cameras: bulk import from CSV, list, probe (RTSP DESCRIBE).", no_args_is_help=True
)

Device = Annotated[list[str] | None, typer.Option("--device", help="only this device's cameras")]
MAX_ERROR_ROWS = 50
STATUS_STYLE = {"REACHABLE": "green", "CODEC_UNSUPPORTED": "yellow", "UNPROBED": "dim"}


def _styled(status: str) -> str:
    style = STATUS_STYLE.get(status, "red")
    return f"[{style}]{status}[/{style}]"


@app.command("import")
def import_(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(help="CSV: name,device,rtsp_url,username,password,description,tags")
    ],
    dry_run: o.DryRun = False,
    on_conflict: Annotated[
        str, typer.Option("--on-conflict", help="a camera already registered: fail, skip or update")
    ] = "fail",
    json: o.Json = False,
) -> None:
    """Validate every row, then register all cameras in one transaction (or none)."""
    from fleet.cameras import Limits, import_cameras
    from fleet.registry import open_registry

    a = app_of(ctx)
    with a.guarded(), open_registry(a.project) as registry:
        limits = Limits.from_config(a.project.config.get("cameras") or {})
        result = import_cameras(registry, file, limits, on_conflict=on_conflict, dry_run=dry_run)
    if json:
        a.output_json(result.as_dict())
    else:
        _report_import(a, result)
    if not result.ok:
        raise typer.Exit(1)


def _report_import(a: CliContext, result: Any) -> None:
    from rich.table import Table

    if result.ok:
        verb = "would import" if result.dry_run else "imported"
        a.display_success(
            f"✓ {Path(result.file).name}: {verb} {len(result.created)} new, "
            f"{len(result.updated)} updated, {len(result.skipped)} skipped "
            f"({result.elapsed_s:.2f} s)"
        )
        return
    table = Table(
        title=f"{Path(result.file).name}: {len(result.errors)} problem(s); nothing was changed",
        title_justify="left",
        header_style="bold",
    )
    for col in ("Row", "Column", "Problem"):
        table.add_column(col, overflow="fold")
    for err in result.errors[:MAX_ERROR_ROWS]:
        table.add_row(str(err.row), err.column or "-", err.message)
    a.err.print(table)
    if len(result.errors) > MAX_ERROR_ROWS:
        a.display_info(f"... and {len(result.errors) - MAX_ERROR_ROWS} more (see --json)")


@app.command("list")
def list_(
    ctx: typer.Context, device: Device = None, site: o.Site = None, json: o.Json = False
) -> None:
    """List cameras by site and device."""
    from fleet.cli.render import grouped_table
    from fleet.registry import open_registry

    a = app_of(ctx)
    with a.guarded(), open_registry(a.project) as registry:
        cams = registry.list_cameras(devices=device or (), sites=site or ())
    if json:
        a.output_json({"cameras": cams})
        return
    rows = [
        {
            "site": c["site"],
            "device": c["device"],
            "camera": c["name"],
            "url": c["rtsp_url"],
            "username": c["username"],
            "password": c["password"],
            "codec": c["codec"] or "",
            "status": _styled(c["status"]),
        }
        for c in cams
    ]
    a.output(
        grouped_table(
            f"{len(cams)} cameras",
            ["Site", "Device", "Camera", "URL", "Username", "Password", "Codec", "Status"],
            rows,
        )
    )


@app.command()
def show(ctx: typer.Context, name: str, json: o.Json = False) -> None:
    """One camera (the password shows as ***)."""
    from rich.table import Table

    from fleet.registry import open_registry

    a = app_of(ctx)
    with a.guarded(), open_registry(a.project) as registry:
        cam = registry.get_camera(name)
    if cam is None:
        a.abort(f"camera '{name}' is not registered; see `fleet cameras list`", 2)
    if json:
        a.output_json({"camera": cam})
        return
    table = Table(title=name, title_justify="left", show_header=False)
    for key, value in cam.items():
        if key != "name":
            table.add_row(key, str(value if value not in (None, "", {}) else "-"))
    a.output(table)


@app.command()
def remove(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(help="camera names")],
    json: o.Json = False,
) -> None:
    """Remove cameras (all named, or none if one is unknown)."""
    from fleet.registry import open_registry

    a = app_of(ctx)
    with a.guarded(), open_registry(a.project) as registry:
        removed = registry.remove_cameras(names)
    if json:
        a.output_json({"removed": removed})
        return
    a.display_success(f"✓ removed {len(removed)} camera(s)")


@app.command()
def probe(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="camera names")] = None,
    all_: Annotated[bool, typer.Option("--all", help="every registered camera")] = False,
    device: Device = None,
    site: o.Site = None,
    inventory: o.Inventory = None,
    from_device: Annotated[
        bool, typer.Option("--from-device", help="probe from each camera's device over SSH")
    ] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds per camera")] = 5.0,
    json: o.Json = False,
) -> None:
    """RTSP DESCRIBE each camera: reachable, auth failed, not found, timeout, codec."""
    from fleet import camera_probe as domain
    from fleet.registry import open_registry

    a = app_of(ctx)
    if not (names or all_ or device or site):
        a.abort("name cameras, or select them with --all, --device or --site", 2)
    with a.guarded(), open_registry(a.project) as registry:
        cams = _targets(registry, names or [], device or [], site or [])
        where = "their devices over SSH" if from_device else "this machine"
        a.display_info(f"probing {len(cams)} camera(s) from {where} (timeout {timeout:g} s)")
        if from_device:
            from fleet import inventory as inv

            nr = inv.select(
                a.project,
                inv.Selection.of(inventory, limit=",".join(sorted({c["device"] for c in cams}))),
            )
            outcomes = domain.probe_from_devices(nr, registry, cams, timeout)
        else:
            outcomes = domain.probe_from_controller(registry, cams, timeout)
        domain.record_probes(registry, outcomes)
    _report_probe(a, outcomes, json)
    if any(out["status"] != "REACHABLE" for out in outcomes):
        raise typer.Exit(1)


def _targets(registry: Any, names: list[str], devices: list[str], sites: list[str]) -> list[Any]:
    from fleet.registry import NotFound

    cams = registry.list_cameras(names=names, devices=devices, sites=sites)
    missing = sorted(set(names) - {c["name"] for c in cams})
    if missing:
        raise NotFound(
            f"camera(s) not registered: {', '.join(missing[:5])}", fix="see `fleet cameras list`"
        )
    if not cams:
        raise NotFound("the selection matched no cameras", fix="see `fleet cameras list`")
    return cams  # type: ignore[no-any-return]


def _report_probe(a: CliContext, outcomes: list[dict[str, Any]], json: bool) -> None:
    from fleet.cli.render import grouped_table

    if json:
        a.output_json({"cameras": outcomes})
        return
    rows = [
        {
            "site": o["site"],
            "device": o["device"],
            "camera": o["name"],
            "via": o["via"],
            "status": _styled(o["status"]),
            "codec": o["codec"] or "",
            "detail": o["detail"],
        }
        for o in outcomes
    ]
    ok = sum(1 for o in outcomes if o["status"] == "REACHABLE")
    a.output(
        grouped_table(
            f"{ok}/{len(outcomes)} cameras reachable with H.264",
            ["Site", "Device", "Camera", "Via", "Status", "Codec", "Detail"],
            rows,
        )
    )
