"""`fleet play PLAYBOOK`, `fleet play resume [ID]`, `fleet play status [ID]`,
`fleet play abort [ID]`.

Parses, calls ``fleet.play.engine`` and renders: a line per play, batch and
finished task while it runs (stderr), then the recap per device (stdout).
``--json`` prints each event as one JSON object a line, then ``{"report": ...}``.
Exit codes: 0 every task ok, 1 a task failed or a play stopped, 2 a bad
playbook or bad usage (refused before any device is touched).
"""

from __future__ import annotations

import json as json_module
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from typer.core import TyperGroup

from fleet.cli import options as o
from fleet.cli.context import CliContext, app_of


class _PlayGroup(TyperGroup):
    """``fleet play FILE ...`` means ``fleet play run FILE ...``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_PlayGroup, no_args_is_help=True,
                  help="Playbooks: plays of typed operations over the inventory "
                       "(`fleet play PLAYBOOK`, resume, status, abort).")

Tags = Annotated[list[str] | None, typer.Option("--tags", help="only tasks with these tags")]
SkipTags = Annotated[list[str] | None, typer.Option("--skip-tags",
                                                    help="leave out tasks with these tags")]
Extra = Annotated[list[str] | None, typer.Option(
    "-e", "--extra-vars", help="name=value or @file.yaml (highest precedence)")]
LimitPattern = Annotated[str | None, typer.Option(
    "--limit", help="a host pattern the plays' hosts are narrowed to (`berlin-*:!berlin-02`)")]
Id = Annotated[str | None, typer.Argument(help="play run id (default: the latest)")]
COLORS = {"ok": "green", "changed": "yellow", "failed": "red", "skipped": "cyan",
          "unpredictable": "magenta", "rescued": "blue", "ignored": "cyan"}


def _absolute(item: str) -> str:
    """``@file`` made absolute, so `fleet play resume` reads the same file from anywhere."""
    return "@" + str(Path(item[1:]).resolve()) if item.startswith("@") else item


def _split(values: list[str] | None) -> tuple[str, ...]:
    return tuple(t.strip() for v in values or () for t in v.split(",") if t.strip())


@app.command()
def run(ctx: typer.Context,
        playbook: Annotated[Path, typer.Argument(help="the playbook YAML file")],
        check: Annotated[bool, typer.Option("--check", help="decide every task, change "
                                                             "nothing")] = False,
        diff: Annotated[bool, typer.Option("--diff", help="print what changes per device")]
        = False,
        tags: Tags = None, skip_tags: SkipTags = None, limit: LimitPattern = None,
        extra_vars: Extra = None, inventory: o.Inventory = None, site: o.Site = None,
        group: o.Group = None, tag: o.Tag = None,
        list_tasks: Annotated[bool, typer.Option("--list-tasks", help="list the tasks that "
                                                 "would run, and stop")] = False,
        list_hosts: Annotated[bool, typer.Option("--list-hosts", help="list each play's "
                                                 "devices, and stop")] = False,
        json: o.Json = False) -> None:
    """Run PLAYBOOK: every play, batch by batch, through the rollout runner."""
    from fleet.play import engine

    a = app_of(ctx)
    options = engine.Options(check=check, diff=diff, tags=_split(tags),
                             skip_tags=_split(skip_tags), limit=limit,
                             extra=tuple(_absolute(e) for e in extra_vars or ()),
                             inventory=inventory,
                             sites=tuple(site or ()), groups=tuple(group or ()),
                             device_tags=tuple(tag or ()))
    with a.guarded():
        prepared = engine.prepare(a.project, playbook, options)
    if list_tasks or list_hosts:
        _listing(a, prepared, list_tasks, json)
        return
    with a.guarded(), _view(a, json) as view:
        state = engine.start(prepared, sinks=[_sink(a, json, diff, view)])
    _finish(a, state, json)


@app.command()
def resume(ctx: typer.Context, play_id: Id = None, json: o.Json = False) -> None:
    """Continue an interrupted play run; no task that finished on a device runs again."""
    from fleet.play import engine

    a = app_of(ctx)
    with a.guarded(), _view(a, json) as view:
        state = engine.resume(a.project, play_id, sinks=[_sink(a, json, False, view)])
    _finish(a, state, json)


@app.command()
def status(ctx: typer.Context, play_id: Id = None, json: o.Json = False) -> None:
    """Where a play run stands (replayed from its journal), with the recap."""
    from fleet.play import engine

    a = app_of(ctx)
    with a.guarded():
        state = engine.status(a.project, play_id)
    if json:
        a.output_json(_report(state))
        return
    a.output(f"play run {state.id}: {state.status}" + (f" ({state.reason})" if state.reason
                                                        else ""))
    a.output(escape(_recap_lines(state)))


@app.command()
def abort(ctx: typer.Context, play_id: Id = None,
          reason: Annotated[str, typer.Option(help="recorded in the journal")]
          = "aborted by operator", json: o.Json = False) -> None:
    """Stop a play run: a running one schedules no more devices and each device stops
    before its next task; one nobody runs is closed now. An aborted run is not resumed."""
    from fleet.play import engine

    a = app_of(ctx)
    with a.guarded():
        state = engine.abort(a.project, play_id, reason)
    if json:
        a.output_json(_report(state))
    elif state.status == "aborted":
        a.display_success(f"play run {state.id} aborted")
    else:
        a.display_info(f"abort requested: play run {state.id} stops before each device's "
                       "next task")


# ---------------------------------------------------------------------------- rendering


class _Bars:
    """A progress bar per play (devices finished of its devices), naming the current batch."""

    def __init__(self, a: CliContext) -> None:
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=a.err,
                                 transient=True)
        self.bar: TaskID | None = None
        self.name, self.batches = "", 0

    def __call__(self, e: dict[str, Any]) -> None:
        kind = e.get("event")
        if kind == "play_started":
            self.name = str(e.get("name", ""))
            self.bar = self.progress.add_task(escape(f"PLAY {self.name}"),
                                              total=len(e.get("devices", [])))
        elif kind == "planned":
            self.batches = len(e.get("batches", []))
        elif kind == "batch_started" and self.bar is not None:
            self.progress.update(self.bar, description=escape(
                f"PLAY {self.name} · batch {e['batch']}/{self.batches}"))
        elif kind == "device_finished" and self.bar is not None:
            self.progress.advance(self.bar)
        elif kind == "play_finished" and self.bar is not None:
            self.progress.remove_task(self.bar)
            self.bar = None


@contextmanager
def _view(a: CliContext, as_json: bool) -> Iterator[_Bars | None]:
    if as_json:
        yield None
        return
    bars = _Bars(a)
    with bars.progress:
        yield bars


def _sink(a: CliContext, as_json: bool, diff: bool, bars: _Bars | None) -> Any:
    lock = threading.Lock()

    def sink(event: dict[str, Any]) -> None:
        with lock:
            if bars is not None:
                bars(event)
            if as_json:
                sys.stdout.write(json_module.dumps(event, sort_keys=True, default=str) + "\n")
                sys.stdout.flush()
            else:
                _show(a, event, diff)

    return sink


def _show(a: CliContext, e: dict[str, Any], diff: bool) -> None:
    kind = e.get("event")
    if kind == "play_started":
        a.display_info(f"\n[bold]{escape('PLAY [' + str(e['name']) + ']')}[/bold] "
                       f"{len(e.get('devices', []))} device(s)")
    elif kind == "batch_started":
        a.display_info(f"[bold]batch {e['batch']}[/bold]: {', '.join(e['devices'])}")
    elif kind == "task_done":
        _show_task(a, e, diff)
    elif kind == "play_finished" and e.get("status") != "completed":
        a.display_info(f"[red]play {e.get('status')}[/red]: {escape(str(e.get('reason')))}")


def _show_task(a: CliContext, e: dict[str, Any], diff: bool) -> None:
    status = "ignored" if e.get("ignored") else str(e.get("status"))
    color = COLORS.get(status, "white")
    msg = f": {e['msg']}" if e.get("msg") and status not in ("ok", "changed") else ""
    a.display_info(f"  [{color}]{status}[/{color}]: "
                   + escape(f"[{e['device']}] {e.get('name', '')}{msg}"))
    for key, change in (e.get("diff") or {}).items() if diff else ():
        if isinstance(change, dict):
            a.display_info(f"      {escape(str(key))}: {escape(str(change.get('before')))} -> "
                           f"{escape(str(change.get('after')))}")
        else:
            a.display_info(f"      {escape(str(key))}: {escape(str(change))}")


def _report(state: Any) -> dict[str, Any]:
    from fleet.play.recap import recap_rows

    return {"id": state.id, "status": state.status, "reason": state.reason,
            "playbook": state.header.get("playbook"), "check": state.header.get("check"),
            "plays": [{"index": i, "name": state.names.get(i, ""), **r.to_dict()}
                      for i, r in sorted(state.reports.items())],
            "recap": recap_rows(state)}


def _recap_lines(state: Any) -> str:
    """Ansible's PLAY RECAP: one line per device, then the failed ones' reasons."""
    from fleet.play.recap import recap_rows
    from fleet.play.work import STATUSES

    rows = recap_rows(state)
    width = max((len(r["device"]) for r in rows), default=0)
    lines = ["PLAY RECAP"]
    for row in rows:
        counts = " ".join(f"{s}={row[s]}" for s in STATUSES)
        extra = "  not-run" if row["not_run"] else ""
        lines.append(f"{row['device']:<{width}} : {counts}{extra}")
    lines += [f"  {r['device']}: {r['reason']}" for r in rows if r["failed"] and r["reason"]]
    return "\n".join(lines)


def _finish(a: CliContext, state: Any, as_json: bool) -> None:
    from fleet.play import engine

    if as_json:
        sys.stdout.write(json_module.dumps({"report": _report(state)}, sort_keys=True,
                                           default=str) + "\n")
    else:
        a.output(escape(_recap_lines(state)))
        a.output(f"play run {state.id}: {state.status}"
                 + (f" ({state.reason})" if state.reason else ""))
    raise typer.Exit(engine.exit_code(state))


def _listing(a: CliContext, prepared: Any, tasks: bool, as_json: bool) -> None:
    plays = []
    for play in prepared.book.plays:
        entry: dict[str, Any] = {"name": play.name, "hosts": play.hosts}
        if tasks:
            entry["tasks"] = [{"name": s.name, "operation": s.operation, "tags": sorted(tags)}
                              for s, tags in _selected(prepared, play)]
        else:
            entry["devices"] = prepared.hosts(play)
        plays.append(entry)
    if as_json:
        a.output_json({"plays": plays})
        return
    for entry in plays:
        a.output(escape(f"play: {entry['name']} ({entry['hosts']})"))
        for item in entry.get("tasks", entry.get("devices", [])):
            a.output(escape(f"  {item['name']}  [{item['operation']}]"
                            + (f"  tags: {', '.join(item['tags'])}" if item["tags"] else "")
                            if isinstance(item, dict) else f"  {item}"))


def _selected(prepared: Any, play: Any) -> list[tuple[Any, frozenset[str]]]:
    out = []

    def walk(steps: Any, inherited: frozenset[str]) -> None:
        for step in steps:
            tags = inherited | step.tags
            if step.is_block:
                walk((*step.block, *step.rescue, *step.always), tags)
            elif prepared.settings.wanted(tags):
                out.append((step, tags))

    walk(play.steps, frozenset())
    return out
