"""fleet demo: the whole story on a local lab fleet."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from fleet.cli.application import app_of
from fleet.errors import FleetError


def command(ctx: typer.Context,
            only: Annotated[Optional[list[str]], typer.Option(help="run only steps whose title has this word")] = None) -> None:
    """Run the guided demo on a local lab fleet (no cloud account needed)."""
    from fleet import demo

    a = app_of(ctx)
    show = demo.Demo(project=a.project.root, say=lambda text: a.err.print(text))
    try:
        demo.run(show, only)
    except FleetError as exc:
        a.fail(exc)
    a.err.print("\n[bold green]Demo complete.[/bold green] Try next:\n"
                "  fleet inventory list -i lab\n  fleet health -i lab --json\n"
                "  fleet lab fault berlin-02 offline && fleet health -i lab   # exits 2\n"
                "  fleet lab down")
