"""Rich rendering for people: tables grouped by site, and live progress as a Nornir Processor.

Domain code never prints; the CLI hands results here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from nornir.core.inventory import Host
from nornir.core.task import AggregatedResult, MultiResult, Task
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

VERDICT_STYLE = {"healthy": "green", "degraded": "yellow", "failing": "red",
                 "unreachable": "bold red", "offline": "bold red", "revoked": "bold red",
                 "ok": "green", "warn": "yellow", "fail": "red"}


def styled(word: str) -> str:
    style = VERDICT_STYLE.get(word)
    return f"[{style}]{word}[/{style}]" if style else word


def grouped_table(title: str, columns: Sequence[str], rows: Iterable[dict[str, Any]],
                  *, group_key: str = "site", whole: Sequence[str] = ("Device",)) -> Table:
    """One table; a section line between sites. Columns named in `whole` hold tokens
    (device names, file names, timestamps) that may wrap between words but are never split
    inside one: a path broken over two lines cannot be copied, so other columns give way."""
    rows = list(rows)
    table = Table(title=title, title_justify="left", header_style="bold")
    for col in columns:
        tokens = [t for r in rows for t in str(r.get(col.lower(), "")).split()] if col in whole else []
        table.add_column(col, overflow="fold", min_width=max([len(col), *map(len, tokens)]))
        last = object()
    for row in rows:
        if row.get(group_key) != last and last is not object():
            table.add_section()
        last = row.get(group_key)
        table.add_row(*[str(row.get(col.lower(), "")) for col in columns])
    return table


class ProgressProcessor:
    """Nornir Processor: an overall bar advanced as each host finishes."""

    def __init__(self, console: Console, description: str) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("{task.fields[last]}"),
            console=console, transient=True,
        )
        self.description = description
        self.task_id: Any = None

    def task_started(self, task: Task) -> None:
        self.progress.start()
        self.task_id = self.progress.add_task(self.description, total=len(task.nornir.inventory.hosts),
                                              last="")

    def task_completed(self, task: Task, result: AggregatedResult) -> None:
        self.progress.stop()

    def task_instance_started(self, task: Task, host: Host) -> None:
        pass

    def task_instance_completed(self, task: Task, host: Host, result: MultiResult) -> None:
        self.progress.update(self.task_id, advance=1, last=host.name)

    def subtask_instance_started(self, task: Task, host: Host) -> None:
        pass

    def subtask_instance_completed(self, task: Task, host: Host, result: MultiResult) -> None:
        pass


def file_table(files: Iterable[dict[str, Any]]) -> Table:
    """A bundle's files (OTA or application), as `inspect` and `verify` show them."""
    table = Table(header_style="bold")
    for col in ("Path", "Size", "Mode", "SHA-256"):
        table.add_column(col, overflow="fold")
    for f in files:
        table.add_row(f["path"], str(f["size"]), oct(f["mode"])[2:], f["sha256"][:16] + "…")
    return table
