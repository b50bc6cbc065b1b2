"""How every rollout is shown, whatever it rolls out: live progress, the summary, --json.

Live while it runs (an overall bar, the current batch, one line per in-flight
device with its step and upload percentage), then a table by site and outcome
and every device that did not succeed with its reason (skipped devices are
listed, never forgotten). ``--json`` prints one JSON object per line: each
event, then ``{"report": ...}``. Used by `fleet ota` and by any later noun that
rolls out (its commands pass their own title).
"""

from __future__ import annotations

import threading
import time
from typing import Any, NoReturn

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from fleet.cli.context import CliContext
from fleet.rollout.report import DONE, NOT_RUN, Report

OUTCOMES = ("succeeded", "unchanged", "failed", "skipped", "not-run", "in_flight", "pending")
STYLE = {"succeeded": "green", "unchanged": "cyan", "failed": "red", "skipped": "yellow",
         "not-run": "magenta", "in_flight": "blue", "pending": "dim"}


def styled(outcome: str) -> str:
    style = STYLE.get(outcome)
    return f"[{style}]{outcome}[/{style}]" if style else outcome


class LiveView:
    """Event sink + install progress callback that keeps a rich Live display current."""

    def __init__(self, console: Console, title: str) -> None:
        self.console, self.title = console, title
        self.report = Report()
        self.detail: dict[str, str] = {}
        self.started: dict[str, float] = {}
        self.lock = threading.Lock()
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TimeElapsedColumn(), console=console)
        self.bar_id = self.bar.add_task(title, total=None)
        self.live = Live(console=console, get_renderable=self.render, refresh_per_second=4,
                         transient=True)

    def __enter__(self) -> LiveView:
        self.live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.stop()

    def __call__(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.report.apply(event)
            kind, device = event.get("event"), str(event.get("device"))
            if kind == "device_started":
                self.started[device] = time.monotonic()
            elif kind == "device_step":
                self.detail.pop(device, None)  # a new step: its own progress, if any, follows
            elif kind == "device_finished":
                self._finished(event)
            if kind in ("planned", "retry"):
                total = sum(len(b) for b in self.report.batches)
                self.bar.update(self.bar_id, total=total, completed=self._done())

    def _finished(self, event: dict[str, Any]) -> None:
        device = event["device"]
        self.started.pop(device, None)
        self.detail.pop(device, None)
        self.bar.update(self.bar_id, completed=self._done())
        if event["outcome"] not in ("succeeded", "unchanged", NOT_RUN):
            self.console.print(f"  {styled(event['outcome'])} {device}: {event.get('reason', '')}")

    def _done(self) -> int:
        return sum(1 for d in self.report.devices.values() if d.outcome in DONE | {NOT_RUN})

    def progress(self, device: str, step: str, fields: dict[str, Any]) -> None:
        """install_bundle's byte-level progress: shown on the device's line."""
        if "done" in fields and fields.get("total"):
            pct = 100.0 * float(fields["done"]) / float(fields["total"])
            with self.lock:
                self.detail[device] = f"{step} {pct:3.0f}%"

    def render(self) -> Group:
        with self.lock:
            batch = self.report.current_batch
            head = Text(f"batch {batch}/{len(self.report.batches)}" if batch else "planning",
                        style="bold")
            lines = Table.grid(padding=(0, 2))
            for name, since in sorted(self.started.items()):
                dev = self.report.devices.get(name)
                step = self.detail.get(name) or (dev.step if dev else "") or "starting"
                lines.add_row(f"  {name}", dev.site if dev else "", step.replace("ota.", ""),
                              f"{time.monotonic() - since:5.1f}s")
            return Group(self.bar, head, lines)


def summary(report: Report) -> Group:
    """The final table by site and outcome, then the devices that need a look."""
    table = Table(title=f"rollout {report.id}: {report.status}", title_justify="left",
                  header_style="bold")
    present = [o for o in OUTCOMES if any(d.outcome == o for d in report.devices.values())]
    table.add_column("site")
    for outcome in present:
        table.add_column(outcome, justify="right")
    for site, counts in report.by_site().items():
        table.add_row(site, *[str(counts.get(o, 0)) for o in present])
    parts: list[Any] = [table, Text(batch_line(report))]
    if report.reason:
        parts.append(Text(f"reason: {report.reason}"))
    attention = [d for d in report.devices.values()
                 if d.outcome not in ("succeeded", "unchanged")]
    if attention:
        detail = Table(title="needs attention", title_justify="left", header_style="bold")
        for col in ("device", "site", "batch", "outcome", "reason"):
            detail.add_column(col, overflow="fold")
        for d in sorted(attention, key=lambda d: (d.batch, d.name)):
            detail.add_row(d.name, d.site, str(d.batch), styled(d.outcome), d.reason)
        parts.append(detail)
    return Group(*parts)


def batch_line(report: Report) -> str:
    """``batches: 1 ok · 1 ok · 1/7 failed (14%, limit 25%)`` — failures against the threshold."""
    limit = (report.header.get("policy") or {}).get("max_fail_percentage")
    parts = []
    for batch in report.batches:
        failed = report.failures(batch)
        outcomes = {report.device(n).outcome for n in batch}
        if not failed and outcomes <= {"succeeded", "unchanged", "skipped"}:
            parts.append(f"{len(batch)} ok")
            continue
        if not failed:
            parts.append(f"{len(batch)} {'/'.join(sorted(outcomes))}")
            continue
        bound = f", limit {limit:g}%" if limit is not None else ""
        parts.append(f"{failed}/{len(batch)} failed ({100 * failed / len(batch):.0f}%{bound})")
    return "batches: " + " · ".join(parts)




class JsonEvents:
    """--json: one event per line on stdout."""

    def __init__(self, a: CliContext) -> None:
        self.a = a

    def __call__(self, event: dict[str, Any]) -> None:
        import json as _json
        import sys

        sys.stdout.write(_json.dumps(event, sort_keys=True, default=str) + "\n")
        sys.stdout.flush()

    def progress(self, device: str, step: str, fields: dict[str, Any]) -> None:
        pass

    def __enter__(self) -> JsonEvents:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def display(a: CliContext, as_json: bool, title: str) -> Any:
    return JsonEvents(a) if as_json else LiveView(a.err, title)


def finish(a: CliContext, report: Report, as_json: bool, *, handed_off: bool = False
            ) -> NoReturn:
    """Print the report; exit 0/1 (a job handed to IoT Jobs exits 0 once created)."""
    from fleet.rollout.engine import exit_code, noun

    if as_json:
        import json as _json
        import sys

        sys.stdout.write(_json.dumps({"report": report.to_dict()}, sort_keys=True,
                                     default=str) + "\n")
    else:
        a.output(summary(report))
        if report.status in ("paused", "interrupted"):
            a.display_info(f"continue with `{noun(report)} resume {report.id}`")
        elif report.with_outcome("failed", "skipped", "not-run"):
            a.display_info(f"rerun the rest with `{noun(report)} retry {report.id} --failed`")
    raise typer.Exit(0 if handed_off else exit_code(report))
