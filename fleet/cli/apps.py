"""fleet app: signed application bundles built from Panorama-style application directories."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from fleet.cli import options as o
from fleet.cli.app_deploy import register as register_deploy
from fleet.cli.context import EXIT_USAGE, CliContext, app_of

app = typer.Typer(help="Applications: build signed bundles, plan and deploy them to fleets.",
                  no_args_is_help=True)


def _invalid(a: CliContext, exc: Any, json: bool) -> NoReturn:
    """Every validation problem, one a line (file: JSON path: message), then exit 2."""
    from fleet.apps.build import describe_problems

    if json:
        a.output_json({"ok": False, "error": exc.line(),
                       "problems": describe_problems(exc.problems)})
    for problem in exc.problems:
        a.display_info(f"  {problem}")
    a.abort(exc.line(), EXIT_USAGE)


@app.command()
def build(ctx: typer.Context,
          app_dir: Annotated[Path, typer.Argument(metavar="APPDIR",
                                                  help="graphs/ + packages/ folder")],
          version: Annotated[str | None, typer.Option(
              help="bundle version (default: the code package's)")] = None,
          out: Annotated[Path | None, typer.Option(help="output folder (default: apps/)")] = None,
          key: Annotated[str | None, typer.Option(help="release key name")] = None,
          min_runtime: Annotated[str | None, typer.Option(
              help="oldest fleet-runtime that may run it (default: this one)")] = None,
          force: Annotated[bool, typer.Option(
              help="replace a bundle of the same version with other content")] = False,
          json: o.Json = False) -> None:
    """Validate an application directory and sign it into apps/NAME-VERSION.app.

    The passphrase comes from FLEET_RELEASE_PASSPHRASE, or is asked for.
    """
    from fleet.apps import build as builder
    from fleet.apps import store
    from fleet.cli.firmware import _passphrase

    a = app_of(ctx)
    with a.guarded():
        try:
            built = builder.build(a.project, app_dir, passphrase=_passphrase(a),
                                  version=version, out_dir=out, key_name=key,
                                  min_runtime=min_runtime, force=force)
        except builder.AppInvalid as exc:
            _invalid(a, exc, json)
    if json:
        a.output_json({**store.describe(built.manifest, built.path),
                       "unchanged": built.unchanged})
        return
    m = built.manifest
    a.display_success(f"{'unchanged' if built.unchanged else 'built'} {built.path}")
    a.display_info(f"  {m.name} {m.version}: {len(m.files)} files, {m.total_size} bytes, "
                   f"platforms {', '.join(m.platforms)}, signed by '{built.key.name}' "
                   f"({m.key_id})")


def _render(a: CliContext, info: dict[str, Any]) -> None:

    a.output(f"[bold]{info['name']} {info['version']}[/bold]")
    for label in ("graph", "min_runtime", "platforms", "key_id", "manifest_sha256"):
        value = info.get(label)
        a.output(f"  {label:<16}{', '.join(value) if isinstance(value, list) else value}")
    for package in info["packages"]:
        entry = f"  entry {package['entry']}" if package["entry"] else ""
        a.output(f"  package         {package['dir']} ({', '.join(package['platforms'])})"
                 f"{entry}")
    from fleet.cli.render import file_table

    a.output(file_table(info["files"]))


@app.command()
def inspect(ctx: typer.Context, bundle: Path, json: o.Json = False) -> None:
    """Show a bundle's manifest (reads only its first members; no signature check)."""
    from fleet.apps import store

    a = app_of(ctx)
    with a.guarded():
        info = store.describe(store.inspect(bundle), bundle)
    a.output_json(info) if json else _render(a, info)


@app.command()
def verify(ctx: typer.Context, bundle: Path, json: o.Json = False) -> None:
    """Verify a bundle as a device would: a project release key's signature, every SHA-256."""
    from fleet.apps import store

    a = app_of(ctx)
    with a.guarded():
        manifest = store.verify(a.project, bundle)
    if json:
        a.output_json({"ok": True, **store.describe(manifest, bundle)})
        return
    a.display_success(f"{bundle}: signature by {manifest.key_id} and {len(manifest.files)} "
                      f"file hashes verified ({manifest.name} {manifest.version})")


@app.command(name="list")
def list_(ctx: typer.Context, json: o.Json = False) -> None:
    """Bundles in the project's apps/ folder."""
    from rich.table import Table

    from fleet.apps import store

    a = app_of(ctx)
    with a.guarded():
        rows = store.listing(a.project)
    if json:
        a.output_json({"bundles": rows})
        return
    table = Table(title="applications", title_justify="left", header_style="bold")
    for col in ("Name", "Version", "Platforms", "Files", "Bundle"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(row["name"], row["version"] or f"? ({row['error']})",
                      ", ".join(row["platforms"]), str(row["files"]), row["bundle"])
    a.output(table)


@app.command(name="import-panorama")
def import_panorama(ctx: typer.Context,
                    project_dir: Annotated[Path, typer.Argument(
                        metavar="DIR", help="panorama-cli project")],
                    out: Annotated[Path | None, typer.Option(
                        help="application folder to create (default: apps-src/NAME)")] = None,
                    json: o.Json = False) -> None:
    """Make a panorama-cli project an application directory that validates and builds."""
    from fleet.apps import build as builder
    from fleet.apps import panorama

    a = app_of(ctx)
    with a.guarded():
        try:
            report = panorama.import_project(a.project, project_dir, out)
        except builder.AppInvalid as exc:
            _invalid(a, exc, json)
    if json:
        a.output_json(report.as_json())
        return
    a.display_success(f"imported {report.name} into {report.dest}")
    for line in report.notes:
        a.display_info(f"  {line}")


@app.command()
def explain(ctx: typer.Context,
            device: Annotated[str, typer.Argument(metavar="DEVICE")],
            application: Annotated[str, typer.Argument(
                metavar="APP|BUNDLE", help="an application name (its newest bundle) or a .app")],
            sets: Annotated[list[str] | None, typer.Option(
                "-e", "--set", metavar="NODE=VALUE",
                help="a command-line value (camera: NAME,NAME or tag:KEY[=VALUE]; ~ unsets)")
            ] = None,
            inventory: o.Inventory = None, json: o.Json = False) -> None:
    """Each parameter and camera binding DEVICE would get, and the layer that set it.

    Layers, lowest first: graph < group < site < host < -e (docs/app-config.md).
    Exit 1 when the device would refuse the configuration (the reason is shown).
    """
    from fleet.apps.explain import explain as explain_config

    a = app_of(ctx)
    with a.guarded():
        cfg = explain_config(a.project, device, application, list(sets or []), inventory)
    if json:
        a.output_json({"device": device, "app": cfg.graph.app, "version": cfg.graph.version,
                       "values": cfg.values(), "cameras": cfg.cameras(),
                       "refused": cfg.refusal()})
    else:
        _render_explain(a, cfg)
    if cfg.refusal():
        if not json:
            a.display_info(f"refused: {cfg.refusal()}")
        raise typer.Exit(1)


def _render_explain(a: CliContext, cfg: Any) -> None:
    from rich.table import Table

    table = Table(title=f"{cfg.device}: {cfg.graph.app} {cfg.graph.version}",
                  box=None, pad_edge=False)
    for column in ("NODE", "KIND", "VALUE", "LAYER", "SET BY"):
        table.add_column(column)
    for node, v in cfg.values().items():
        value = ", ".join(v["value"]) if isinstance(v["value"], list) else v["value"]
        if v["kind"] == "camera" and v["set_as"] not in (None, v["value"]):
            value = f"{value or '-'} ({v['set_as'] if isinstance(v['set_as'], str) else ''})"
        shown = "-" if value is None else str(value)
        unset = " (unset)" if v["set_as"] is None and v["layer"] != "graph" else ""
        table.add_row(node, v["kind"], shown, v["layer"] + unset, v["source"])
    a.output(table)


register_deploy(app)
