"""Root of the `fleet` CLI. Sub-apps are registered in SUBCOMMANDS (module, name)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from fleet.cli.application import Application
from fleet.errors import FleetError

SUBCOMMANDS = (
    ("fleet.cli.inventory", "inventory"),
    ("fleet.cli.lab", "lab"),
    ("fleet.cli.health", "health"),
    ("fleet.cli.demo", "demo"),
    ("fleet.cli.logs", "logs"),
    ("fleet.cli.ca", "ca"),
    ("fleet.cli.provision", "provision"),
    ("fleet.cli.devices", "devices"),
    ("fleet.cli.cameras", "cameras"),
    ("fleet.cli.secrets", "secrets"),
    ("fleet.cli.firmware", "firmware"),
    ("fleet.cli.ota", "ota"),
)

app = typer.Typer(
    name="fleet",
    help="edgefleet: provision, update and watch fleets of edge vision appliances.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    project: Annotated[
        Optional[Path],
        typer.Option("--project", envvar="FLEET_PROJECT", help="fleet project directory"),
    ] = None,
    no_color: Annotated[bool, typer.Option("--no-color", help="plain output")] = False,
) -> None:
    ctx.obj = Application(project, color=False if no_color else None)


def _register() -> None:
    for module_name, name in SUBCOMMANDS:
        module = importlib.import_module(module_name)
        if hasattr(module, "app"):
            app.add_typer(module.app, name=name)
        else:
            app.command(name=name)(module.command)


_register()


def main() -> None:
    try:
        app()
    except FleetError as exc:  # raised outside a command body (e.g. in the callback)
        sys.stderr.write(f"error: {exc.line()}\n")
        sys.exit(exc.exit_code)


if __name__ == "__main__":  # pragma: no cover
    main()
