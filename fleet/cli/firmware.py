"""fleet firmware: release keys, and signed OTA bundles built from firmware/ recipes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from fleet.cli import options as o
from fleet.cli.context import CliContext, app_of

app = typer.Typer(help="Release keys and signed OTA bundles (firmware/ recipes).",
                  no_args_is_help=True)


def _passphrase(a: CliContext, *, new: bool = False) -> bytes | None:
    from fleet import firmware

    secret = firmware.passphrase_from_env()
    if secret is None and sys.stdin.isatty():
        text = typer.prompt("release key passphrase", hide_input=True, confirmation_prompt=new,
                            err=True)
        secret = text.encode()
    return secret


@app.command()
def keygen(ctx: typer.Context,
           name: Annotated[str, typer.Option(help="key name (a new name rotates keys)")]
           = "release",
           force: Annotated[bool, typer.Option(help="replace an existing key of that name")]
           = False,
           install_lab: Annotated[bool | None, typer.Option(
               "--install-lab/--no-install-lab",
               help="trust the new key on existing lab devices (asked when omitted)")] = None,
           json: o.Json = False) -> None:
    """Create an Ed25519 release signing key in certs/release/ (private half encrypted, 0600).

    The passphrase comes from FLEET_RELEASE_PASSPHRASE, or is asked for.
    """
    from fleet import firmware

    a = app_of(ctx)
    with a.guarded():
        key = firmware.keygen(a.project, name, passphrase=_passphrase(a, new=True), force=force)
    devices = _maybe_install(a, install_lab)
    if json:
        a.output_json({**key.record(), "installed_on": devices})
        return
    a.display_success(f"release key '{key.name}' ({key.key_id}) written")
    a.display_info(f"  public  {key.public}\n  private {key.private} (encrypted, 0600, "
                   "git-ignored: back it up)")
    if devices:
        a.display_info(f"  trusted on {len(devices)} lab device(s)")


def _maybe_install(a: CliContext, install_lab: bool | None) -> list[str]:
    from fleet.lab import keyrings

    existing = keyrings.lab_keyrings(a.project)
    if not existing or install_lab is False:
        return []
    if install_lab is None:
        if not sys.stdin.isatty():
            a.display_info(f"{len(existing)} lab device(s) do not trust this key yet; "
                           "rerun with --install-lab, or `fleet lab up` for new devices")
            return []
        if not typer.confirm(f"trust it on {len(existing)} existing lab device(s)?", err=True):
            return []
    return keyrings.install_in_lab(a.project)


@app.command()
def build(ctx: typer.Context,
          recipe: Annotated[Path, typer.Argument(help="firmware/RECIPE.yaml")],
          out: Annotated[Path | None, typer.Option(help="output directory")] = None,
          key: Annotated[str | None, typer.Option(help="release key name")] = None,
          json: o.Json = False) -> None:
    """Build and sign a bundle from a recipe (default output: out/firmware/)."""
    from fleet import firmware

    a = app_of(ctx)
    with a.guarded():
        secret = _passphrase(a)
        with a.err.status(f"building {recipe}…"):
            built = firmware.build(a.project, recipe, passphrase=secret, out_dir=out, key_name=key)
    if json:
        a.output_json(firmware.describe(built.manifest, built.path))
        return
    m = built.manifest
    a.display_success(f"built {built.path}")
    a.display_info(f"  {m.name} {m.version}: {len(m.files)} files, {_size(m.total_size)}, "
                   f"signed by '{built.key.name}' ({m.key_id})")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _render_manifest(a: CliContext, info: dict[str, Any]) -> None:

    a.output(f"[bold]{info['name']} {info['version']}[/bold]  {info.get('description') or ''}")
    for label, key in (("hardware", "hardware"), ("arch", "arch"), ("min version", "min_version"),
                       ("key id", "key_id"), ("manifest sha256", "manifest_sha256")):
        value = info.get(key)
        a.output(f"  {label:<16}{', '.join(value) if isinstance(value, list) else value or '-'}")
    if info.get("hooks"):
        a.output(f"  {'hooks':<16}" + ", ".join(f"{k}: {v}" for k, v in info["hooks"].items()))
    if info.get("downgrade_permit"):
        a.output(f"  {'downgrade':<16}permitted: {info['downgrade_permit'].get('reason', '')}")
    from fleet.cli.render import file_table

    a.output(file_table(info["files"]))


@app.command()
def inspect(ctx: typer.Context, bundle: Path, json: o.Json = False) -> None:
    """Show a bundle's manifest (reads only its first member; no signature check)."""
    from fleet import firmware

    a = app_of(ctx)
    with a.guarded():
        info = firmware.describe(firmware.inspect(bundle), bundle)
    a.output_json(info) if json else _render_manifest(a, info)


@app.command()
def verify(ctx: typer.Context, bundle: Path, json: o.Json = False) -> None:
    """Verify a bundle as a device would: signature by a project release key, every SHA-256."""
    from fleet import firmware

    a = app_of(ctx)
    with a.guarded(), a.err.status(f"verifying {bundle}…"):
        manifest = firmware.verify(a.project, bundle)
    if json:
        a.output_json({"ok": True, **firmware.describe(manifest, bundle)})
        return
    a.display_success(f"{bundle}: signature by {manifest.key_id} and {len(manifest.files)} "
                      f"file hashes verified ({manifest.name} {manifest.version})")


@app.command(name="list")
def list_(ctx: typer.Context, json: o.Json = False) -> None:
    """Recipes under firmware/, bundles under out/firmware/, and release keys."""
    from rich.table import Table

    from fleet import firmware

    a = app_of(ctx)
    with a.guarded():
        data = firmware.listing(a.project)
    if json:
        a.output_json(data)
        return
    table = Table(title="firmware", title_justify="left", header_style="bold")
    for col in ("Name", "Version", "Recipe", "Bundle"):
        table.add_column(col, overflow="fold")
    for row in data["bundles"]:
        table.add_row(row["name"], row["version"], row["recipe"] or "-", row["bundle"] or "-")
    a.output(table)
    keys = ", ".join(f"{k['name']} ({k['key_id']})" for k in data["keys"]) or "none"
    a.output(f"release keys: {keys}")
