"""Root of the `fleet` CLI. Sub-apps are registered in SUBCOMMANDS (module, name).

A run that names its subcommand builds only that one (`main`): building all of them
was a third of the start-up every command pays, a health sweep included (#19).
`app`, with every subcommand, is built when first asked for (tests, `fleet --help`).
"""

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

ROOT_OPTIONS_WITH_VALUE = ("--project",)


def _print_version(value: bool) -> None:
    if value:
        from fleet import __version__
        from fleet.agent import PROTOCOL

        typer.echo(f"fleet {__version__} (agent protocol {PROTOCOL})")
        raise typer.Exit()


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


def build_app(names: tuple[str, ...] | None = None) -> typer.Typer:
    """The root app with the subcommands `names` (all when None), imported here."""
    built = typer.Typer(
        name="fleet",
        help="edgefleet: provision, update and watch fleets of edge vision appliances.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    built.callback()(root)
    for module_name, name in SUBCOMMANDS:
        if names is not None and name not in names:
            continue
        module = importlib.import_module(module_name)
        if hasattr(module, "app"):
            built.add_typer(module.app, name=name)
        else:
            built.command(name=name)(module.command)
    return built


def subcommand_of(args: list[str]) -> str | None:
    """The subcommand `args` run (``--project P health -i lab`` -> ``health``), or None
    when they name none that exists (root --help or --version, a typo: the full app says)."""
    known = {name for _module, name in SUBCOMMANDS}
    words = iter(args)
    for word in words:
        if word in ROOT_OPTIONS_WITH_VALUE:
            next(words, None)
        elif not word.startswith("-"):
            return word if word in known else None
    return None


def __getattr__(name: str) -> Any:
    if name == "app":  # every subcommand, built once when first asked for
        globals()["app"] = built = build_app()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    name = subcommand_of(sys.argv[1:])
    command = typer.main.get_command(build_app((name,)) if name else build_app())
    _hide_flag_types(command)
    try:
        command(prog_name="fleet")
    except FleetError as exc:  # raised outside a command body (e.g. in the callback)
        sys.stderr.write(f"error: {exc.line()}\n")
        sys.exit(exc.exit_code)


if __name__ == "__main__":  # pragma: no cover
    main()
