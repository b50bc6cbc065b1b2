"""fleet provision: USB provisioning archives (build, verify, write to a drive, wipe)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fleet.cli import options as o
from fleet.cli.context import CliContext, app_of

app = typer.Typer(
    help="Provisioning archives for factory-fresh devices, on USB drives.", no_args_is_help=True
)

Out = Annotated[
    Path | None, typer.Option("--out", help="folder for archives (default .fleet/archives)")
]
ValidFor = Annotated[
    str, typer.Option("--valid-for", help="install-by deadline from now: 30m, 12h, 7d")
]
CertDays = Annotated[int, typer.Option("--cert-days", help="device certificate validity in days")]
Mount = Annotated[Path, typer.Option("--mount", help="mount point of the USB drive")]
Force = Annotated[bool, typer.Option("--force", help="allow a folder that is not a mount point")]
ReplaceIdentity = Annotated[
    bool,
    typer.Option(
        "--replace-identity",
        help="also build for devices already provisioned: a new certificate and host key "
        "(the old key stays accepted until the device boots with the new archive)",
    ),
]

KEEP_SAFE = (
    "the archive holds the device's private key: keep it safe, and wipe the drive after "
    "first boot with `fleet provision wipe --mount PATH`"
)


def _specs(a: CliContext, selection: Any) -> list[Any]:
    from fleet import inventory as inv
    from fleet.provisioning import DeviceSpec

    nr = inv.select(a.project, selection)
    return [DeviceSpec.from_host(h) for _, h in sorted(nr.inventory.hosts.items())]


def _build(
    a: CliContext,
    specs: list[Any],
    out: Path | None,
    valid_for: str,
    cert_days: int,
    *,
    progress: bool,
    replace_identity: bool = False,
) -> Any:
    from fleet import pki
    from fleet import provisioning as prov
    from fleet.cli.ca import passphrase

    settings = prov.BuildSettings(
        out or a.project.state_dir / "archives", prov.parse_duration(valid_for), cert_days
    )
    prov.check_specs(specs)  # refuse bad input before asking for the passphrase
    ca = pki.load_ca(a.project, passphrase(a))
    if not progress:
        return prov.build_archives(
            a.project, ca, specs, settings, replace_identity=replace_identity
        )
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("archives"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=a.err,
        transient=True,
    ) as bar:
        task = bar.add_task("archives", total=len(specs))
        return prov.build_archives(
            a.project,
            ca,
            specs,
            settings,
            on_done=lambda _n, _e: bar.advance(task),
            replace_identity=replace_identity,
        )


def _report(a: CliContext, report: Any, seconds: float, json: bool) -> None:
    from fleet.cli.render import grouped_table

    built = [b.summary() | {"site": b.spec.site} for b in report.built]
    if json:
        a.output_json(
            {
                "built": built,
                "failed": report.failed,
                "skipped": report.skipped,
                "seconds": round(seconds, 3),
                "recorded_in": report.registry,
            }
        )
    else:
        rows = [{**b, "archive": Path(b["archive"]).name} for b in built]
        a.output(
            grouped_table(
                f"{len(built)} archive(s)", ["Site", "Device", "Archive", "Install_by"], rows
            )
        )
        for name, error in sorted(report.failed.items()):
            a.err.print(f"[red]✗[/red] {name}: {error}", markup=True, highlight=False)
        for name, why in sorted(report.skipped.items()):
            a.display_info(f"skipped {name}: {why}")
        rate = len(built) / seconds if seconds > 0 else 0.0
        a.display_info(
            f"built {len(built)}, failed {len(report.failed)} in {seconds:.2f}s "
            f"({rate:.0f}/s); host keys pinned in .fleet/known_hosts; devices "
            f"AWAITING_PROVISIONING ({report.registry})"
        )
        if built:
            a.display_warning(KEEP_SAFE)
    if report.failed:
        raise typer.Exit(1)


@app.command()
def archive(
    ctx: typer.Context,
    devices: Annotated[list[str], typer.Argument(help="device names")],
    inventory: o.Inventory = None,
    out: Out = None,
    valid_for: ValidFor = "7d",
    cert_days: CertDays = 825,
    replace_identity: ReplaceIdentity = False,
    json: o.Json = False,
) -> None:
    """Build one archive per DEVICE: identity, host key (pinned now), network, signed manifest.

    A device the registry knows as provisioned is refused unless --replace-identity.
    """
    from fleet import inventory as inv
    from fleet.provisioning import check_name

    a = app_of(ctx)
    with a.guarded():
        for name in devices:
            check_name(name)
        specs = _specs(a, inv.Selection.of(inventory, limit=",".join(devices)))
        started = time.perf_counter()
        report = _build(
            a, specs, out, valid_for, cert_days, progress=False, replace_identity=replace_identity
        )
    _refuse_skipped(a, report)
    _report(a, report, time.perf_counter() - started, json)


def _refuse_skipped(a: CliContext, report: Any) -> None:
    """Devices named one by one: a provisioned one is an error, not a quiet skip."""
    if report.skipped:
        name = sorted(report.skipped)[0]
        a.abort(f"{name}: {report.skipped[name]}", 2)


@app.command("all")
def all_(
    ctx: typer.Context,
    inventory: o.Inventory = None,
    site: o.Site = None,
    group: o.Group = None,
    tag: o.Tag = None,
    limit: o.Limit = None,
    out: Out = None,
    valid_for: ValidFor = "7d",
    cert_days: CertDays = 825,
    replace_identity: ReplaceIdentity = False,
    json: o.Json = False,
) -> None:
    """Build archives for every selected device, in parallel, with a progress bar and summary.

    Devices the registry knows as provisioned are skipped unless --replace-identity.
    """
    from fleet import inventory as inv

    a = app_of(ctx)
    with a.guarded():
        specs = _specs(a, inv.Selection.of(inventory, site, group, tag, limit))
        started = time.perf_counter()
        report = _build(
            a, specs, out, valid_for, cert_days, progress=not json,
            replace_identity=replace_identity,
        )
    _report(a, report, time.perf_counter() - started, json)


@app.command()
def verify(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="archive (.zip)")],
    json: o.Json = False,
) -> None:
    """Run the device's checks on an archive: zip safety, signature, hashes, keys, deadline."""
    from fleet import provisioning as prov

    a = app_of(ctx)
    with a.guarded():
        checked = prov.verify_file(a.project, path)
    info = {
        "archive": str(path),
        "ok": True,
        "device": checked.device,
        "serial": checked.manifest.get("serial"),
        "install_by": checked.manifest["install_by"],
        "ca_fingerprint": checked.manifest["ca_fingerprint"],
        "trust": checked.trust,
        "members": sorted(checked.manifest["members"]),
        "sha256": checked.sha256,
    }
    if json:
        a.output_json(info)
        return
    trust = "this project's CA" if checked.trust == "pinned" else "its own CA (no project CA here)"
    a.display_success(
        f"✓ {path.name}: {checked.device}, {len(info['members'])} members verified, "
        f"signed by {trust}, install by {info['install_by']}"
    )


@app.command()
def usb(
    ctx: typer.Context,
    device: str,
    mount: Mount,
    force: Force = False,
    archive_file: Annotated[
        Path | None,
        typer.Option("--archive", help="an archive built before (default: build a fresh one)"),
    ] = None,
    inventory: o.Inventory = None,
    valid_for: ValidFor = "7d",
    cert_days: CertDays = 825,
    max_bytes: Annotated[
        int | None, typer.Option("--max-bytes", help="use at most this much of the drive")
    ] = None,
    replace_identity: ReplaceIdentity = False,
    json: o.Json = False,
) -> None:
    """Write DEVICE's archive to the root of a mounted USB drive and read it back.

    An unexpired archive built before for DEVICE is written again (no second
    certificate); otherwise a fresh one is built.
    """
    from fleet import inventory as inv
    from fleet import provisioning as prov

    a = app_of(ctx)
    with a.guarded():
        prov.check_name(device)
        prov.check_drive(mount, force=force)
        reused = False
        if archive_file is None:
            specs = _specs(a, inv.Selection.of(inventory, limit=device, limit_given_as="DEVICE"))
            archive_file = _reusable(a, specs)
            reused = archive_file is not None
        if archive_file is None:
            report = _build(
                a, specs, None, valid_for, cert_days, progress=False,
                replace_identity=replace_identity,
            )
            _refuse_skipped(a, report)
            if report.failed:
                a.abort(f"{device}: {report.failed[device]}")
            archive_file = report.built[0].path
        checked = prov.verify_file(a.project, archive_file)
        if checked.device != device:
            a.abort(f"{archive_file} is for device {checked.device}, not {device}", 2)
        written = prov.write_to_drive(archive_file, mount, force=force, max_bytes=max_bytes)
        prov.verify_file(a.project, written.path)
    if json:
        a.output_json(
            {
                "device": device,
                "path": str(written.path),
                "bytes": written.bytes,
                "sha256": written.sha256,
                "free_after": written.free_after,
                "install_by": checked.manifest["install_by"],
                "reused": reused,
                "secret": True,
            }
        )
        return
    a.display_success(
        f"✓ {written.path} written and read back ({written.bytes} bytes, "
        f"sha256 {written.sha256[:16]}…); install by {checked.manifest['install_by']}"
    )
    if reused:
        a.display_info(f"wrote the archive built before ({archive_file.name}): no new certificate")
    a.display_warning("this drive now holds secrets: " + KEEP_SAFE)


def _reusable(a: CliContext, specs: list[Any]) -> Path | None:
    from fleet import provisioning as prov

    if len(specs) != 1:
        return None  # not in the inventory: the build says so
    return prov.reusable_archive(a.project, specs[0], a.project.state_dir / "archives")


@app.command()
def wipe(ctx: typer.Context, mount: Mount, force: Force = False, json: o.Json = False) -> None:
    """Remove every edgefleet file from a drive (archives are zeroed before removal)."""
    from fleet import provisioning as prov

    a = app_of(ctx)
    with a.guarded():
        removed = prov.wipe_drive(mount, force=force)
    if json:
        a.output_json({"mount": str(mount), "removed": removed})
        return
    a.display_success(
        f"removed {len(removed)} edgefleet item(s) from {mount}: "
        f"{', '.join(removed) or 'nothing to remove'}"
    )
    if removed:
        a.display_info("flash drives keep old blocks: format the drive to be sure")
