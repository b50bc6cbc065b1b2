"""Options shared by every command that targets devices or prints a report."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

Inventory = Annotated[
    Optional[str],
    typer.Option("--inventory", "-i", help="inventory name under inventories/, a path, or `registry` (the registered devices)"),
]
Site = Annotated[Optional[list[str]], typer.Option("--site", help="only devices at this site")]
Group = Annotated[Optional[list[str]], typer.Option("--group", help="only devices in this group")]
Tag = Annotated[Optional[list[str]], typer.Option("--tag", help="only devices with this tag")]
Limit = Annotated[
    Optional[str], typer.Option("--limit", help="comma-separated device names")
]
Json = Annotated[bool, typer.Option("--json", help="machine-readable output on stdout")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="show what would change; change nothing")]
Concurrency = Annotated[
    Optional[int],
    typer.Option("--concurrency", "-c", min=1, help="devices worked on at once (default: fleet.yaml)"),
]
