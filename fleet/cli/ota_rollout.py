"""`fleet ota plan|rollout|status|resume|retry|abort`: rolling updates in batches.

Registered on the `fleet ota` app by ``register(app)`` (called from fleet/cli/ota.py).
The domain is ``fleet.rollout`` (policy, batches, runner, journal, IoT Jobs);
this module parses, calls it, and renders: live while it runs (an overall bar,
the current batch, one line per in-flight device with its step and upload
percentage), then a table by site and outcome and every device that did not
succeed with its reason (skipped devices are listed, never forgotten).
``--json`` prints one JSON object per line: each event, then ``{"report": ...}``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from fleet.cli import options as o
from fleet.cli.context import CliContext, app_of
from fleet.errors import UsageError
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


def plan_table(batches: list[list[str]], facts: dict[str, dict[str, Any]], sites: dict[str, str],
               version: str) -> Table:
    table = Table(title=f"plan: {sum(map(len, batches))} devices to {version}",
                  title_justify="left", header_style="bold")
    for col in ("batch", "device", "site", "now", "action"):
        table.add_column(col)
    for number, batch in enumerate(batches, start=1):
        table.add_section()
        for name in batch:
            fact = facts.get(name, {})
            action = {"change": "update", "current": "[cyan]already at version[/cyan]",
                      "offline": "[yellow]offline[/yellow]"}.get(fact.get("state", ""), "?")
            table.add_row(str(number), name, sites.get(name, ""), str(fact.get("software", "-")),
                          action)
    return table


# ---------------------------------------------------------------------------- commands

Bundle = Annotated[Path, typer.Argument(help="a signed bundle from `fleet firmware build`")]
RolloutId = Annotated[str | None, typer.Argument(help="rollout id (default: the latest)")]
PolicyFile = Annotated[Path | None, typer.Option("--policy", help="policy YAML file")]
Batches = Annotated[str | None, typer.Option(
    "--batches", help="Ansible serial: sizes or percentages of the selection, e.g. 1,10%,50%")]
MaxFailPct = Annotated[float | None, typer.Option(
    "--max-fail-percentage", help="stop when a batch's failures exceed this percentage")]
MaxFailures = Annotated[int | None, typer.Option(
    "--max-failures", help="stop once this many devices failed in the whole run")]
Concurrency = Annotated[int | None, typer.Option("--concurrency", help="devices at once")]
PerSite = Annotated[int | None, typer.Option(
    "--per-site-concurrency", help="devices at once per site")]
Order = Annotated[str | None, typer.Option(
    "--order", help="inventory | site-by-site | shuffle")]
Seed = Annotated[int | None, typer.Option("--seed", help="shuffle seed")]
Canary = Annotated[list[str] | None, typer.Option(
    "--canary-tag", help="devices with this tag go first (repeatable)")]
Offline = Annotated[str | None, typer.Option("--offline", help="skip | fail | wait")]
OfflineWait = Annotated[float | None, typer.Option(
    "--offline-wait", help="seconds to wait for an offline device (--offline wait)")]
DeviceTimeout = Annotated[float | None, typer.Option(
    "--device-timeout", help="seconds before a device still in progress fails")]
Pause = Annotated[bool | None, typer.Option(
    "--pause-after-batch/--no-pause-after-batch", help="stop after each batch until resumed")]
Engine = Annotated[str, typer.Option("--engine", help="ssh (push, default) | iot-jobs")]
Bucket = Annotated[str | None, typer.Option("--bucket", help="S3 bucket (--engine iot-jobs)")]
RoleArn = Annotated[str | None, typer.Option(
    "--role-arn", help="IAM role IoT uses to presign the bundle URL per device (iot-jobs)")]


def register(app: typer.Typer) -> None:
    """Add the rollout commands to the `fleet ota` app."""
    for fn in (plan, rollout, status, resume, retry, abort):
        app.command(name=fn.__name__)(fn)


def _policy(a: CliContext, policy_file: Path | None, **flags: Any) -> Any:
    from fleet.rollout.policy import resolve

    section = {k: v for k, v in a.project.config.get("rollout", {}).items() if k != "iot_jobs"}
    if flags.get("canary_tags") == []:
        flags["canary_tags"] = None
    return resolve(section, policy_file, flags)


def _selection(inventory: Any, site: Any, group: Any, tag: Any, limit: Any) -> Any:
    from fleet import inventory as inv

    return inv.Selection.of(inventory, site, group, tag, limit)


def _selection_dict(sel: Any) -> dict[str, Any]:
    return {"inventory": sel.inventory, "sites": list(sel.sites), "groups": list(sel.groups),
            "tags": list(sel.tags), "limit": list(sel.limit)}


def plan(ctx: typer.Context, bundle: Bundle, inventory: o.Inventory = None, site: o.Site = None,
         group: o.Group = None, tag: o.Tag = None, limit: o.Limit = None,
         policy_file: PolicyFile = None, batches: Batches = None,
         max_fail_percentage: MaxFailPct = None, max_failures: MaxFailures = None,
         concurrency: Concurrency = None, per_site_concurrency: PerSite = None,
         order: Order = None, seed: Seed = None, canary_tag: Canary = None,
         offline: Offline = None, offline_wait: OfflineWait = None,
         device_timeout: DeviceTimeout = None, pause_after_batch: Pause = None,
         engine: Engine = "ssh", json: o.Json = False) -> None:
    """Show the batches, which devices would change and which are current; change nothing."""
    from fleet import inventory as inv
    from fleet.rollout import batches as batching
    from fleet.rollout.iot_jobs import translate
    from fleet.rollout.update import OtaWork, facts_task

    a = app_of(ctx)
    with a.guarded():
        policy = _policy(a, policy_file, batches=batches, max_fail_percentage=max_fail_percentage,
                         max_failures=max_failures, concurrency=concurrency,
                         per_site_concurrency=per_site_concurrency, order=order, seed=seed,
                         canary_tags=canary_tag, offline=offline, offline_wait=offline_wait,
                         device_timeout=device_timeout, pause_after_batch=pause_after_batch)
        work = OtaWork.for_bundle(a.project, bundle)
        nr = inv.select(a.project, _selection(inventory, site, group, tag, limit))
    hosts = list(nr.inventory.hosts.values())
    planned = [[h.name for h in b] for b in batching.plan(hosts, policy, batching.describe_host)]
    facts = {n: r[0].result for n, r in nr.run(task=facts_task, version=work.version).items()}
    nr.close_connections(on_failed=True)
    sites = {h.name: batching.describe_host(h).site for h in hosts}
    out: dict[str, Any] = {"version": work.version, "policy": policy.to_dict(),
                           "batches": planned,
                           "devices": [{"name": n, **f} for n, f in sorted(facts.items())]}
    if engine == "iot-jobs":
        translation = translate(policy, len(hosts))
        out["iot_jobs"] = {"config": translation.config, "notes": translation.notes}
    if json:
        a.output_json(out)
        return
    a.output(plan_table(planned, facts, sites, work.version))
    counts = {k: sum(1 for f in facts.values() if f.get("state") == k)
              for k in ("change", "current", "offline")}
    a.output(f"{counts['change']} to update, {counts['current']} already at {work.version}, "
             f"{counts['offline']} offline")
    if engine == "iot-jobs":
        a.output_json(out["iot_jobs"])


def rollout(ctx: typer.Context, bundle: Bundle, inventory: o.Inventory = None,
            site: o.Site = None, group: o.Group = None, tag: o.Tag = None,
            limit: o.Limit = None, policy_file: PolicyFile = None, batches: Batches = None,
            max_fail_percentage: MaxFailPct = None, max_failures: MaxFailures = None,
            concurrency: Concurrency = None, per_site_concurrency: PerSite = None,
            order: Order = None, seed: Seed = None, canary_tag: Canary = None,
            offline: Offline = None, offline_wait: OfflineWait = None,
            device_timeout: DeviceTimeout = None, pause_after_batch: Pause = None,
            engine: Engine = "ssh", bucket: Bucket = None, role_arn: RoleArn = None,
            json: o.Json = False) -> None:
    """Roll BUNDLE out across the selection in batches under the policy.

    Exit codes: 0 every device updated or current (or paused), 1 anything failed,
    stopped, skipped or aborted, 2 bad usage (refused before any device is touched).
    """
    from fleet import inventory as inv
    from fleet.rollout import engine as rollout_engine
    from fleet.rollout.update import OtaWork

    a = app_of(ctx)
    with a.guarded():
        policy = _policy(a, policy_file, batches=batches, max_fail_percentage=max_fail_percentage,
                         max_failures=max_failures, concurrency=concurrency,
                         per_site_concurrency=per_site_concurrency, order=order, seed=seed,
                         canary_tags=canary_tag, offline=offline, offline_wait=offline_wait,
                         device_timeout=device_timeout, pause_after_batch=pause_after_batch)
        sel = _selection(inventory, site, group, tag, limit)
        nr = inv.select(a.project, sel, num_workers=policy.concurrency)
        if engine == "iot-jobs":
            report = _iot_rollout(a, bundle, policy, nr, sel, bucket, role_arn)
            _finish(a, report, json, handed_off=True)
        if engine != "ssh":
            raise UsageError(f"--engine {engine!r} is not ssh or iot-jobs")
        with _display(a, json, "rollout") as view:
            work = OtaWork.for_bundle(a.project, bundle, progress=view.progress)
            report = rollout_engine.start(a.project, nr, work, policy,
                                          selection=_selection_dict(sel), sinks=[view])
    _finish(a, report, json)


def status(ctx: typer.Context, rollout_id: RolloutId = None, json: o.Json = False) -> None:
    """Where a rollout stands, replayed from its journal (IoT jobs: from their executions)."""
    from fleet.rollout import engine as rollout_engine

    a = app_of(ctx)
    with a.guarded():
        report = rollout_engine.status(a.project, rollout_id)
        if report.header.get("engine") == "iot-jobs":
            report = _iot_status(report)
    if json:
        a.output_json(report.to_dict())
        return
    a.output(summary(report))


def resume(ctx: typer.Context, rollout_id: RolloutId = None, json: o.Json = False) -> None:
    """Continue an interrupted or paused rollout: finished devices are not touched, devices
    that were in flight are checked (their reported version decides), never installed twice."""
    _continue(app_of(ctx), rollout_id, json, "resume")


def retry(ctx: typer.Context, rollout_id: RolloutId = None,
          failed: Annotated[bool, typer.Option(
              "--failed", help="rerun failed, skipped and never-reached devices")] = False,
          json: o.Json = False) -> None:
    """Rerun the devices of a finished rollout that did not succeed (requires --failed)."""
    a = app_of(ctx)
    if not failed:
        a.abort("say which devices to retry: --failed", code=2)
    _continue(a, rollout_id, json, "retry")


def _continue(a: CliContext, rollout_id: str | None, json: bool, verb: str) -> None:
    """`resume` or `retry` an existing rollout (the engine function of the same name)."""
    from fleet.rollout import engine as rollout_engine

    with a.guarded():
        header = rollout_engine.status(a.project, rollout_id).header
        with _display(a, json, verb) as view:
            work = _work(a, header, view)
            report = getattr(rollout_engine, verb)(a.project, rollout_id, _nr_for(a, header),
                                                   work, sinks=[view])
    _finish(a, report, json)


def abort(ctx: typer.Context, rollout_id: RolloutId = None,
          reason: Annotated[str, typer.Option(
              help="recorded in the journal")] = "aborted by operator",
          json: o.Json = False) -> None:
    """Stop scheduling new devices; devices in flight finish or roll back."""
    from fleet.rollout import engine as rollout_engine

    a = app_of(ctx)
    with a.guarded():
        before = rollout_engine.status(a.project, rollout_id)
        if before.header.get("engine") == "iot-jobs":
            _iot_jobs(before.header).cancel(before.id, reason)
            report = _iot_status(before)
        else:
            report = rollout_engine.abort(a.project, rollout_id, reason)
    if json:
        a.output_json(report.to_dict())
    elif report.status == "aborted":
        a.display_success(f"rollout {report.id} aborted")
    else:
        a.display_info(f"abort requested: rollout {report.id} stops scheduling; "
                       "devices in flight finish or roll back")


# ---------------------------------------------------------------------------- helpers


class _JsonEvents:
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

    def __enter__(self) -> _JsonEvents:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def _display(a: CliContext, as_json: bool, title: str) -> Any:
    return _JsonEvents(a) if as_json else LiveView(a.err, title)


def _finish(a: CliContext, report: Report, as_json: bool, *, handed_off: bool = False
            ) -> NoReturn:
    """Print the report; exit 0/1 (a job handed to IoT Jobs exits 0 once created)."""
    from fleet.rollout.engine import exit_code

    if as_json:
        import json as _json
        import sys

        sys.stdout.write(_json.dumps({"report": report.to_dict()}, sort_keys=True,
                                     default=str) + "\n")
    else:
        a.output(summary(report))
        if report.status in ("paused", "interrupted"):
            a.display_info(f"continue with `fleet ota resume {report.id}`")
        elif report.with_outcome("failed", "skipped", "not-run"):
            a.display_info(f"rerun the rest with `fleet ota retry {report.id} --failed`")
    raise typer.Exit(0 if handed_off else exit_code(report))


def _work(a: CliContext, header: dict[str, Any], view: Any) -> Any:
    from fleet.rollout.update import work_from_header

    if header.get("engine") == "iot-jobs":
        raise UsageError("IoT Jobs rollouts run in AWS: nothing to resume here",
                         fix="watch them with `fleet ota status`")
    return work_from_header(a.project, header, progress=view.progress)


def _nr_for(a: CliContext, header: dict[str, Any]) -> Any:
    from fleet import inventory as inv

    sel = header.get("selection", {})

    def nr_for(names: list[str]) -> Any:
        chosen = inv.Selection(inventory=sel.get("inventory"), limit=tuple(names))
        policy = header.get("policy", {})
        return inv.select(a.project, chosen, num_workers=int(policy.get("concurrency", 10)))

    return nr_for


def _aws_settings(a: CliContext, bucket: str | None, role_arn: str | None) -> dict[str, Any]:
    section = dict(a.project.config.get("rollout", {}).get("iot_jobs") or {})
    registry = a.project.config.get("registry", {})
    settings = {"bucket": bucket or section.get("bucket"),
                "region": section.get("region") or registry.get("region"),
                "endpoint_url": section.get("endpoint_url") or registry.get("endpoint_url"),
                "role_arn": role_arn or section.get("role_arn"),
                "group_prefix": registry.get("group_prefix", "edgefleet-")}
    if not settings["bucket"]:
        raise UsageError("--engine iot-jobs needs an S3 bucket for the bundle",
                         fix="pass --bucket NAME or set rollout.iot_jobs.bucket in fleet.yaml")
    return settings


def _iot_jobs(settings: dict[str, Any]) -> Any:
    from fleet.rollout.iot_jobs import AwsTarget, IotJobs

    keys = ("bucket", "region", "endpoint_url", "role_arn", "group_prefix")
    return IotJobs(AwsTarget(**{k: settings[k] for k in keys if settings.get(k) is not None}))


def _iot_rollout(a: CliContext, bundle: Path, policy: Any, nr: Any, sel: Any,
                 bucket: str | None, role_arn: str | None) -> Report:
    from fleet.rollout import batches as batching
    from fleet.rollout.journal import Journal
    from fleet.rollout.update import OtaWork

    settings = _aws_settings(a, bucket, role_arn)
    work = OtaWork.for_bundle(a.project, bundle)
    hosts = list(nr.inventory.hosts.values())
    things = [h.name for h in hosts]
    sites = _whole_sites(a, sel, hosts, batching)
    header = {**work.header(), **settings, "policy": policy.to_dict(), "engine": "iot-jobs",
              "selection": _selection_dict(sel)}
    journal = Journal.create(a.project, header=header, devices=things)
    try:
        made = _iot_jobs(settings).create(journal.id, work.bundle, work.version, policy,
                                          things, sites)
    except Exception as exc:
        journal.append({"event": "run_finished", "status": "aborted",
                        "reason": f"CreateJob failed: {exc}"})
        raise
    finally:
        journal.release()
    journal.append({"event": "planned", "batches": [things],
                    "sites": {h.name: batching.describe_host(h).site for h in hosts}})
    journal.append({"event": "job_created", **made})
    journal.append({"event": "run_finished", "status": "completed",
                    "reason": f"handed to AWS IoT Jobs as job {made['job_id']}"})
    a.display_info(f"IoT job {made['job_id']} created; bundle at {made['s3']}")
    return _iot_status(journal.report())


def _whole_sites(a: CliContext, sel: Any, hosts: list[Any], batching: Any) -> dict[str, list[str]]:
    """{site: devices} when the selection is exactly whole sites, else {} (target things)."""
    from fleet import inventory as inv

    if sel.groups or sel.tags or sel.limit:
        return {}
    everyone = inv.select(a.project, inv.Selection(inventory=sel.inventory))
    out: dict[str, list[str]] = {}
    for h in hosts:
        out.setdefault(batching.describe_host(h).site, []).append(h.name)
    for h in everyone.inventory.hosts.values():
        site = batching.describe_host(h).site
        if site in out and h.name not in out[site]:
            return {}
    return out


def _iot_status(report: Report) -> Report:
    from fleet.rollout.iot_jobs import report_from_executions

    jobs = _iot_jobs(report.header)  # the job id is the rollout id
    return report_from_executions(report, jobs.job(report.id), jobs.executions(report.id))
