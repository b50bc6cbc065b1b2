"""fleet device: the device side on a real box (Debian package, first contact over SSH)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fleet.cli import options as o
from fleet.cli.context import app_of

app = typer.Typer(help="The device side on a real box: its Debian package, its bootstrap.",
                  no_args_is_help=True)


@app.command()
def package(
    ctx: typer.Context,
    arch: Annotated[str, typer.Option(help="target architecture: arm64 (Jetson) or amd64")]
    = "arm64",
    out: Annotated[Path, typer.Option(help="folder for the .deb")] = Path("dist"),
    extras: Annotated[str, typer.Option(
        help="edgefleet-runtime extras to bundle, comma-separated (mqtt, vision; '' for none)")]
    = "mqtt",
    python: Annotated[str, typer.Option(
        help="the target's python3 version (Debian 12: 3.11, Ubuntu 22.04 / JetPack 6: 3.10)")]
    = "3.11",
    revision: Annotated[int, typer.Option(help="Debian revision (raise it to upgrade a box)")] = 1,
    wheelhouse: Annotated[Optional[Path], typer.Option(
        help="wheel cache (default .fleet/cache/wheels in the project)")] = None,
    json: o.Json = False,
) -> None:
    """Build edgefleet-runtime_<version>_<arch>.deb: the agent and runtime in a venv under
    /opt/edgefleet, systemd units, the device layout and a runtime user.

    Wheels for the target are downloaded once into the wheelhouse; later builds need no
    network. Nothing is downloaded on the device.
    """
    from fleet import device_package as dp

    a = app_of(ctx)
    with a.guarded():
        cache = wheelhouse or a.project.state_dir / "cache/wheels"
        settings = dp.PackageSettings(
            arch=arch, out_dir=out, wheelhouse=cache,
            extras=tuple(e.strip() for e in extras.split(",") if e.strip()),
            python=python, revision=revision)
        settings.check()
        a.display_info(f"building {dp.PACKAGE} for {arch} (Python {python}, extras: "
                       f"{', '.join(settings.extras) or 'none'})")
        built = dp.build(settings)
    if json:
        a.output_json({"path": str(built.path), "arch": built.arch, "version": built.version,
                       "extras": list(built.extras), "size": built.size,
                       "installed_kib": built.installed_kib, "wheels": built.wheels,
                       "downloaded": built.downloaded})
        return
    a.display_success(f"{built.path} ({built.size / 1e6:.1f} MB, "
                      f"{built.installed_kib / 1024:.0f} MiB installed)")
    a.display_info(f"  {len(built.wheels)} Python distributions; wheels "
                   f"{'downloaded into' if built.downloaded else 'from'} {settings.cache}")
