"""The one object every command gets: project, console, output and abort.

Data goes to stdout (`output`, `output_json`); people-facing messages go to
stderr (`display_*`), so `--json` output stays clean for scripts.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from fleet.errors import FleetError, printable
from fleet.project import Project

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CliContext:
    def __init__(self, project_dir: Path | None, *, color: bool | None = None) -> None:
        self._project_dir = project_dir
        self._project: Project | None = None
        self.err = Console(stderr=True, no_color=color is False, highlight=False)
        self.out = Console(no_color=color is False, highlight=False, soft_wrap=True)

    @property
    def project(self) -> Project:
        if self._project is None:
            try:
                self._project = Project.locate(self._project_dir)
            except FleetError as exc:  # bad fleet.yaml or --project: one line, whatever the command
                self.fail(exc)
        return self._project

    def output(self, renderable: Any) -> None:
        self.out.print(renderable)

    def output_json(self, obj: Any) -> None:
        from fleet.jsonout import dumps  # json.dumps(indent=2, sort_keys, default=str), faster

        sys.stdout.write(dumps(obj) + "\n")
        sys.stdout.flush()

    def display_info(self, text: str) -> None:
        self.err.print(text)

    def display_success(self, text: str) -> None:
        self.err.print(f"[green]{text}[/green]")

    def display_warning(self, text: str) -> None:
        self.err.print(f"[yellow]warning:[/yellow] {text}")

    def abort(self, text: str, code: int = EXIT_FAILED) -> NoReturn:
        # the text quotes file names and values: "[x]" in them is not markup
        self.err.print(f"[red]error:[/red] {escape(printable(text))}", markup=True, soft_wrap=True)
        raise typer.Exit(code)

    def fail(self, exc: FleetError) -> NoReturn:
        self.abort(exc.line(), exc.exit_code)

    @contextmanager
    def guarded(self) -> Iterator[None]:
        """A FleetError raised in the block ends the command: its one line, its exit code."""
        try:
            yield
        except FleetError as exc:
            self.fail(exc)


def app_of(ctx: typer.Context) -> CliContext:
    root = ctx.find_root()
    if not isinstance(root.obj, CliContext):
        root.obj = CliContext(None)
    return root.obj
