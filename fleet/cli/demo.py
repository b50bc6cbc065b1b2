"""fleet demo: the whole story on a local lab fleet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fleet.cli.context import app_of


def command(ctx: typer.Context,
            only: Annotated[Optional[list[str]], typer.Option(help="run only steps whose title has this word")] = None,
            dir: Annotated[Optional[Path], typer.Option("--dir", help="demo project (default: ./demo-fleet)")] = None) -> None:
    """Run the guided demo on a local lab fleet (no cloud account needed).

    The demo works in its own fresh project (./demo-fleet by default, seeded with
    this project's firmware recipes), never in yours: it creates a CA, keys and
    a registry of its own, and the next run starts from scratch.
    """
    from fleet import demo

    a = app_of(ctx)
    with a.guarded():
        target = (dir or a.project.root / "demo-fleet").resolve()
        if not (only and (target / demo.MARKER).exists()):  # --only reuses the last demo's lab
            demo.prepare_project(a.project.root, target)
        a.err.print(f"demo project: {target}")
        show = demo.Demo(project=target, say=lambda text: a.err.print(text))
        demo.run(show, only)
    a.err.print("\n[bold green]Demo complete.[/bold green] Try next:\n"
                "  cd demo-fleet && . ../.venv/bin/activate\n"
                "  fleet inventory list -i lab\n  fleet health -i lab --json\n"
                "  fleet lab fault berlin-02 offline && fleet health -i lab   # exits 2\n"
                "  fleet ota status            # the rollout's journal\n"
                "  fleet lab down              # stop the lab (state stays in demo-fleet/.fleet)")
