"""Root of the `fleet` CLI. Sub-apps are registered in SUBCOMMANDS (module, name)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from fleet.cli.context import CliContext
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
    ("fleet.cli.apps", "app"),
    ("fleet.cli.serve", "serve"),
    ("fleet.cli.device", "device"),
    ("fleet.cli.play", "play"),
)

app = typer.Typer(
    name="fleet",
    help="edgefleet: provision, update and watch fleets of edge vision appliances.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from fleet import __version__
        from fleet.agent import PROTOCOL

        typer.echo(f"fleet {__version__} (agent protocol {PROTOCOL})")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    project: Annotated[
        Optional[Path],
        typer.Option("--project", envvar="FLEET_PROJECT", help="fleet project directory"),
    ] = None,
    no_color: Annotated[bool, typer.Option("--no-color", help="plain output")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True,
                     help="print the version (and the agent protocol) and exit"),
    ] = False,
) -> None:
    ctx.obj = CliContext(project, color=False if no_color else None)


def _register() -> None:
    for module_name, name in SUBCOMMANDS:
        module = importlib.import_module(module_name)
        if hasattr(module, "app"):
            app.add_typer(module.app, name=name)
        else:
            app.command(name=name)(module.command)


_register()


def _hide_flag_types(command: Any) -> None:
    """Flags take no value, but this typer shows `<bool>` beside each one in --help, which
    reads as if they wanted one (`--json <bool>`): give them an empty metavar instead."""
    help_option = command.get_help_option(command.context_class(command))  # made once, cached
    for param in [*command.params, *([help_option] if help_option else [])]:
        if getattr(param, "is_flag", False):  # typer's options are its own click's classes
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _hide_flag_types(sub)


def main() -> None:
    command = typer.main.get_command(app)
    _hide_flag_types(command)
    try:
        command(prog_name="fleet")
    except FleetError as exc:  # raised outside a command body (e.g. in the callback)
        sys.stderr.write(f"error: {exc.line()}\n")
        sys.exit(exc.exit_code)


if __name__ == "__main__":  # pragma: no cover
    main()
