"""`fleet app plan|deploy|status|resume|retry|abort|remove|rollback`: applications on fleets.

Registered on the `fleet app` Typer by ``register(app)`` (fleet/cli/apps.py).
The domain is ``fleet.apps.work`` (the ``app`` work kind) on the generic
rollout engine; `status`, `resume`, `retry` and `abort` are the very commands
of `fleet ota` (the engine finds the work by the kind in the journal). `plan`
runs each device's decision (``AppWork.decide``), the one `deploy` acts on;
`deploy` runs it first and refuses to start while a selected device is
refused. `remove` and `rollback` are one batched agent call per device, not
rollouts (they move no bytes and need no health gate from the controller:
the device rolls back to the previous version it kept).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fleet.cli import options as o
from fleet.cli import rollout_options as r
from fleet.cli.context import CliContext, app_of
from fleet.cli.ota import rollout as ota_rollout
from fleet.cli.rollout_view import display, finish
from fleet.errors import UsageError

Bundle = Annotated[Path, typer.Argument(help="a signed application bundle (`fleet app build`)")]
AppName = Annotated[str, typer.Argument(metavar="APP", help="application name on the devices")]
Sets = Annotated[list[str] | None, typer.Option(
    "-e", "--set", help="name=value for this deploy (highest layer; repeatable)")]
Exclude = Annotated[list[str] | None, typer.Option(
    "--exclude", help="leave this device out (e.g. one the plan refuses; repeatable)")]
Window = Annotated[float | None, typer.Option(
    "--window", help="seconds each device holds its health gate (device default: 30)")]
MinFps = Annotated[float | None, typer.Option(
    "--min-fps", help="frames per second every camera must reach (device default: 1)")]
NoPrestage = Annotated[bool, typer.Option(
    "--no-prestage", help="send each batch's blobs only at its turn, not while the batch "
    "before it holds its health gates")]
AllowUnreachable = Annotated[bool, typer.Option(
    "--allow-unreachable", help="do not refuse a device whose bound camera fails the RTSP "
    "probe (the plan still shows it)")]
ACTION = {"change": "deploy", "current": "[cyan]current[/cyan]",
          "offline": "[yellow]offline[/yellow]", "refused": "[red]refused[/red]"}


def register(app: typer.Typer) -> None:
    """Add the deployment commands to the `fleet app` Typer."""
    for fn in (plan, deploy, remove, rollback):
        app.command(name=fn.__name__)(fn)
    for shared in (ota_rollout.status, ota_rollout.resume, ota_rollout.retry, ota_rollout.abort):
        app.command(name=shared.__name__)(shared)


def _check_name(name: str) -> None:
    from fleet_runtime.apps.release import NAME_RE

    if not NAME_RE.fullmatch(name):
        raise UsageError(f"{name!r} is not an application name",
                         fix="1-64 letters, digits, '.', '_' or '-', as `fleet app list` shows")


def _select(a: CliContext, inventory: str | None, site: list[str] | None,
            group: list[str] | None, tag: list[str] | None, limit: str | None,
            exclude: list[str] | None, workers: int = 20) -> Any:
    from fleet import inventory as inv

    sel = inv.Selection.of(inventory, site, group, tag, limit)
    nr = inv.select(a.project, sel, num_workers=workers)
    unknown = sorted(set(exclude or ()) - set(nr.inventory.hosts))
    if unknown:
        raise UsageError(f"--exclude names devices not in the selection: {', '.join(unknown)}")
    if exclude:
        nr = nr.filter(filter_func=lambda h: h.name not in set(exclude))
    return sel, nr


def _decide(nr: Any, work: Any) -> dict[str, dict[str, Any]]:
    rows = {n: res[0].result for n, res in nr.run(task=work.decide).items()}
    return {n: row if isinstance(row, dict) else {"state": "offline", "reason": str(row)}
            for n, row in rows.items()}


def plan(ctx: typer.Context, bundle: Bundle, inventory: o.Inventory = None, site: o.Site = None,
         group: o.Group = None, tag: o.Tag = None, limit: o.Limit = None,
         exclude: Exclude = None, sets: Sets = None, policy_file: r.PolicyFile = None,
         batches: r.Batches = None, canary_tag: r.Canary = None, order: r.Order = None,
         seed: r.Seed = None, allow_unreachable: AllowUnreachable = False,
         engine: r.Engine = "ssh", json: o.Json = False) -> None:
    """Show per device what a deploy would do (change, current or refused); move no byte.

    Per device: current -> target, bytes to send after deduplication, free disk after,
    platform, configuration summary, each bound camera reachable or not (probed from
    the device; unreachable refuses it unless --allow-unreachable), and the reason of
    a refusal.

    Exit codes: 0 nothing refused, 1 a device is refused or offline, 2 bad usage.
    """
    from fleet.apps.work import AppWork
    from fleet.rollout import batches as batching
    from fleet.rollout.settings import policy_for

    a = app_of(ctx)
    with a.guarded():
        policy = policy_for(a.project, policy_file, r.policy_flags(**locals()))
        _check_engine(engine)
        work = AppWork.for_bundle(a.project, bundle, sets=sets,
                                  allow_unreachable=allow_unreachable, engine=engine)
        _, nr = _select(a, inventory, site, group, tag, limit, exclude)
    hosts = list(nr.inventory.hosts.values())
    planned = [[h.name for h in b] for b in batching.plan(hosts, policy, batching.describe_host)]
    rows = _decide(nr, work)
    nr.close_connections(on_failed=True)
    blocked = sorted(n for n, row in rows.items() if row.get("state") in ("refused", "offline"))
    if json:
        a.output_json({"app": work.name, "version": work.version, "batches": planned,
                       "policy": policy.to_dict(), "blocked": blocked,
                       "devices": [{"name": n, **row} for n, row in sorted(rows.items())]})
    else:
        _print_plan(a, work.name, work.version, planned, rows)
    raise typer.Exit(1 if blocked else 0)


def _print_plan(a: CliContext, name: str, version: str, planned: list[list[str]],
                rows: dict[str, dict[str, Any]]) -> None:
    table = Table(title=f"plan: {name} {version} on {len(rows)} devices", title_justify="left",
                  header_style="bold")
    for col in ("batch", "device", "now", "action", "send", "free after", "platform", "cameras",
                "config"):
        table.add_column(col, overflow="fold")
    for number, batch in enumerate(planned, start=1):
        table.add_section()
        for device in batch:
            row = rows.get(device, {})
            free = row.get("free_after")
            table.add_row(str(number), device, str(row.get("current") or "-"),
                          ACTION.get(str(row.get("state")), "?"), _bytes(row.get("send_bytes")),
                          "-" if free is None else _bytes(free), str(row.get("platform") or "-"),
                          _cameras(row.get("cameras")), _config(row.get("config")))
    a.output(table)
    for device, row in sorted(rows.items()):
        if row.get("state") in ("refused", "offline"):
            a.output(f"  {device}: {row.get('state')}: {row.get('reason')}")


def _bytes(value: Any) -> str:
    if not isinstance(value, int):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value = value / 1024  # type: ignore[assignment]
    return str(value)


def _cameras(probed: Any) -> str:
    """`door reachable, yard UNREACHABLE` (names and status only), `-` when none is bound."""
    if not isinstance(probed, list) or not probed:
        return "-"
    return ", ".join(f"{c['name']} " + ("reachable" if c["reachable"] else
                                       f"[red]unreachable[/red] ({c['status']})")
                     for c in probed)


def _config(summary: Any) -> str:
    """`min_score=0.7 (host), door=cam-1 (cli)`: what a layer above the graph set; the
    whole story with files and lines is `fleet app explain`."""
    if not isinstance(summary, dict):
        return "defaults"
    shown = [f"{node}={item['value']} ({item['layer']})"
             for node, item in sorted((summary.get("parameters") or {}).items())
             if item.get("layer") != "graph"]
    shown += [f"{node}={','.join(item['cameras'])} ({item['layer']})"
              for node, item in sorted((summary.get("cameras") or {}).items())
              if item.get("layer") != "graph"]
    return ", ".join(shown) or "defaults"


def deploy(ctx: typer.Context, bundle: Bundle, inventory: o.Inventory = None,
           site: o.Site = None, group: o.Group = None, tag: o.Tag = None,
           limit: o.Limit = None, exclude: Exclude = None, sets: Sets = None,
           policy_file: r.PolicyFile = None, batches: r.Batches = None,
           max_fail_percentage: r.MaxFailPct = None, max_failures: r.MaxFailures = None,
           concurrency: r.Concurrency = None, per_site_concurrency: r.PerSite = None,
           order: r.Order = None, seed: r.Seed = None, canary_tag: r.Canary = None,
           offline: r.Offline = None, offline_wait: r.OfflineWait = None,
           device_timeout: r.DeviceTimeout = None, pause_after_batch: r.Pause = None,
           engine: r.Engine = "ssh", bucket: r.Bucket = None, role_arn: r.RoleArn = None,
           window: Window = None, min_fps: MinFps = None,
           allow_unreachable: AllowUnreachable = False, no_prestage: NoPrestage = False,
           json: o.Json = False) -> None:
    """Deploy BUNDLE across the selection in batches under the policy (additive).

    Other applications are not touched. Runs the plan first: nothing starts while a
    selected device is refused (leave it out with --exclude). While a batch holds its
    health gates the next batch's missing blobs are sent ahead (only blobs: nothing is
    staged or switched before its turn; --no-prestage sends them at the turn).

    Exit codes: 0 every device succeeded or current, 1 a device was refused before the
    start, or anything failed, rolled back, stopped or was skipped, 2 bad usage.
    """
    from fleet.apps.prestage import PreStage
    from fleet.apps.work import REUSE_S, AppWork
    from fleet.rollout import engine as rollout_engine
    from fleet.rollout import iot_rollout
    from fleet.rollout.settings import aws_settings, policy_for, selection_dict

    a = app_of(ctx)
    with a.guarded():
        policy = policy_for(a.project, policy_file, r.policy_flags(**locals()))
        _check_engine(engine)
        sel, nr = _select(a, inventory, site, group, tag, limit, exclude, policy.concurrency)
        work = AppWork.for_bundle(a.project, bundle, sets=sets,
                                  health=_health(window, min_fps),
                                  allow_unreachable=allow_unreachable, engine=engine)
        work.reuse_s = REUSE_S  # the plan just made is what batch 1 acts on
        _refuse_if_refused(a, _decide(nr, work), json)
        if engine == "iot-jobs":
            settings = aws_settings(a.project, bucket, role_arn)
            report, made = iot_rollout.start(a.project, nr, work, policy, sel, settings)
            a.display_info(f"IoT job {made['job_id']} created; bundle at {made['s3']}")
            finish(a, report, json, handed_off=True)
        with display(a, json, "deploy") as view:
            work.progress = view.progress
            work.prestage = None if no_prestage else PreStage(work, nr, policy.concurrency)
            try:
                report = rollout_engine.start(
                    a.project, nr, work, policy,
                    selection={**selection_dict(sel), "exclude": list(exclude or [])},
                    sinks=[view] if work.prestage is None else [view, work.prestage])
            finally:
                if work.prestage is not None:
                    work.prestage.close()
    finish(a, report, json)


def _check_engine(engine: str) -> None:
    if engine not in ("ssh", "iot-jobs"):
        raise UsageError(f"--engine {engine!r} is not ssh or iot-jobs")


def _health(window: float | None, min_fps: float | None) -> dict[str, float]:
    """The gate thresholds this deploy sets in each version's manifest (over the device's)."""
    for flag, value in (("--window", window), ("--min-fps", min_fps)):
        if value is not None and not value >= 0:
            raise UsageError(f"{flag} {value:g} is not a number >= 0")
    given = {"window_s": window, "min_fps": min_fps}
    return {k: float(v) for k, v in given.items() if v is not None}


def _refuse_if_refused(a: CliContext, rows: dict[str, dict[str, Any]], json: bool) -> None:
    refused = {n: row for n, row in sorted(rows.items()) if row.get("state") == "refused"}
    if not refused:
        return
    if json:
        a.output_json({"ok": False, "refused": [{"name": n, "reason": row.get("reason")}
                                                for n, row in refused.items()]})
    for name, row in refused.items():
        a.display_info(f"  {name}: refused: {row.get('reason')}")
    a.abort(f"{len(refused)} selected device(s) refused: nothing deployed; fix them, or leave "
            "them out with --exclude NAME", code=1)


def _batched(a: CliContext, nr: Any, verb: str, app_name: str, json: bool) -> None:
    """One agent call per device (`app remove|rollback APP`), a row each; exit 1 if any failed."""
    from fleet.apps.actions import app_action

    results = nr.run(task=app_action, verb=verb, app=app_name)
    nr.close_connections(on_failed=True)
    rows = {n: res[0].result if isinstance(res[0].result, dict) else
            {"state": "failed", "reason": str(res[0].exception or res[0].result)}
            for n, res in results.items()}
    failed = sorted(n for n, row in rows.items() if row.get("state") == "failed")
    if json:
        a.output_json({"app": app_name, "action": verb, "failed": failed,
                       "devices": [{"name": n, **row} for n, row in sorted(rows.items())]})
    else:
        table = Table(title=f"{verb} {app_name}", title_justify="left", header_style="bold")
        for col in ("device", "state", "version", "reason"):
            table.add_column(col, overflow="fold")
        for name, row in sorted(rows.items()):
            table.add_row(name, str(row.get("state")), str(row.get("version") or "-"),
                          str(row.get("reason") or ""))
        a.output(table)
    raise typer.Exit(1 if failed else 0)


def remove(ctx: typer.Context, app_name: AppName, inventory: o.Inventory = None,
           site: o.Site = None, group: o.Group = None, tag: o.Tag = None,
           limit: o.Limit = None, concurrency: r.Concurrency = None,
           json: o.Json = False) -> None:
    """Stop APP and delete its versions on each selected device (others untouched).

    Exit codes: 0 removed (or not there), 1 a device failed, 2 bad usage.
    """
    a = app_of(ctx)
    with a.guarded():
        _check_name(app_name)
        _, nr = _select(a, inventory, site, group, tag, limit, None, concurrency or 20)
    _batched(a, nr, "remove", app_name, json)


def rollback(ctx: typer.Context, app_name: AppName, inventory: o.Inventory = None,
             site: o.Site = None, group: o.Group = None, tag: o.Tag = None,
             limit: o.Limit = None, concurrency: r.Concurrency = None,
             json: o.Json = False) -> None:
    """Put APP back on the previous version each device kept.

    A deploy in progress on a device goes back to its committed version instead.

    Exit codes: 0 rolled back, 1 a device failed (e.g. no previous version), 2 bad usage.
    """
    a = app_of(ctx)
    with a.guarded():
        _check_name(app_name)
        _, nr = _select(a, inventory, site, group, tag, limit, None, concurrency or 20)
    _batched(a, nr, "rollback", app_name, json)
