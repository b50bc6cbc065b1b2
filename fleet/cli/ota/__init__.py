"""fleet ota: over-the-air updates: `install` and `version` here, the rollout commands
(plan, rollout, status, resume, retry, abort) in ``rollout.py``."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from fleet.cli import options as o
from fleet.cli.context import CliContext, app_of
from fleet.cli.ota.rollout import register as register_rollouts

app = typer.Typer(help="Over-the-air updates: signed bundles, A/B slots, automatic rollback.",
                  no_args_is_help=True)


class StepView:
    """Per-step progress for people: one line per finished step, a bar for byte counts."""

    def __init__(self, a: CliContext) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self.a = a
        self.bar = Progress(TextColumn("  {task.description}"), BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), console=a.err, transient=True)
        self.tasks: dict[tuple[str, str], Any] = {}
        self.lock = threading.Lock()

    def __call__(self, device: str, step: str, fields: dict[str, Any]) -> None:
        with self.lock:
            status = fields.get("status")
            if "done" in fields and "total" in fields:
                self._bytes(device, step, int(fields["done"]), int(fields["total"]))
            elif status in ("done", "failed"):
                self._finished(device, step, status, float(fields.get("seconds", 0)))

    def __enter__(self) -> StepView:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def _bytes(self, device: str, step: str, done: int, total: int) -> None:
        key = (device, step)
        if key not in self.tasks:
            self.tasks[key] = self.bar.add_task(f"{device} {step}", total=total)
        self.bar.update(self.tasks[key], completed=done)

    def _finished(self, device: str, step: str, status: str, seconds: float) -> None:
        task = self.tasks.pop((device, step), None)
        if task is not None:
            self.bar.remove_task(task)
        mark = "[green]✓[/green]" if status == "done" else "[red]✗[/red]"
        self.bar.console.print(f"  {mark} {device:<14} {step:<9} {seconds:6.2f}s")


@app.command()
def install(ctx: typer.Context,
            device: Annotated[str, typer.Argument(help="device name in the inventory")],
            bundle: Annotated[Path, typer.Argument(help="a bundle from `fleet firmware build`")],
            inventory: o.Inventory = None,
            trials: Annotated[int, typer.Option(
                help="boots the new slot gets before falling back")] = 3,
            require_healthy: Annotated[bool, typer.Option(
                help="roll back on a degraded health verdict too (default: failing only)")]
            = False,
            dry_run: o.DryRun = False,
            json: o.Json = False) -> None:
    """Upload, install, activate, reboot, check health and version, then commit or roll back.

    Exit codes: 0 updated (or already current), 1 failed or rolled back, 2 bad usage.
    """
    from fleet import health, ota
    from fleet import inventory as inv

    a = app_of(ctx)
    with a.guarded():
        manifest = ota.read_target(bundle)
        nr = inv.select(a.project, inv.Selection.of(inventory, limit=device, limit_given_as="DEVICE"), num_workers=1)
    if not json:
        a.display_info(f"installing {manifest.name} {manifest.version} on {device}")
    view = StepView(a)
    with view if not json else _quiet():
        results = nr.run(task=ota.install_bundle, bundle_path=bundle, project=a.project,
                         trials=trials, health_flags=health.agent_flags(a.project),
                         require_healthy=require_healthy, dry_run=dry_run,
                         progress=None if json else view, on_failed=True)
    nr.close_connections(on_failed=True)
    raise typer.Exit(_report(a, device, results[device], json))


def _quiet() -> Any:
    import contextlib

    return contextlib.nullcontext()


def _report(a: CliContext, device: str, multi: Any, as_json: bool) -> int:
    first = multi[0]
    report = first.result if isinstance(first.result, dict) else {
        "device": device, "reason": _error(first)}
    if as_json:
        a.output_json({**report, "changed": first.changed, "failed": first.failed})
    elif first.failed:
        a.display_info(f"[red]✗ {device}: {report.get('reason')}[/red]")
    else:
        change = first.diff or report.get("reason") or "no change"
        a.display_success(f"✓ {device}: {change}")
    return 1 if first.failed else 0


def _error(result: Any) -> str:
    from fleet.health import failure_reason

    return failure_reason(result.exception) if result.exception else str(result.result)


@app.command()
def version(ctx: typer.Context, bundle: Path, json: o.Json = False) -> None:
    """Print the version a bundle installs (reads only its manifest)."""
    from fleet import ota

    a = app_of(ctx)
    with a.guarded():
        target = ota.target_version(bundle)
    a.output_json({"version": target}) if json else a.output(target)


register_rollouts(app)
