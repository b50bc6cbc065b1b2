"""`fleet ota plan|rollout|status|resume|retry|abort`: rolling updates in batches.

Registered on the `fleet ota` app by ``register(app)`` (fleet/cli/ota/__init__.py).
The domain is ``fleet.rollout`` (policy, batches, runner, journal, work kinds,
IoT Jobs); this module parses, calls it and renders with ``rollout_view``. The
policy flags are the shared ones of ``rollout_options``. `plan` runs each
device's decision (``OtaWork.decide``), the very one the rollout's install
acts on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fleet.cli import options as o
from fleet.cli import rollout_options as r
from fleet.cli.context import CliContext, app_of
from fleet.cli.rollout_view import display, finish, summary
from fleet.errors import UsageError

Bundle = Annotated[Path, typer.Argument(help="a signed bundle from `fleet firmware build`")]
ACTION = {"change": "update", "current": "[cyan]already at version[/cyan]",
          "offline": "[yellow]offline[/yellow]", "refused": "[red]refused[/red]"}


def register(app: typer.Typer) -> None:
    """Add the rollout commands to the `fleet ota` app."""
    for fn in (plan, rollout, status, resume, retry, abort):
        app.command(name=fn.__name__)(fn)


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
            table.add_row(str(number), name, sites.get(name, ""), str(fact.get("software", "-")),
                          ACTION.get(fact.get("state", ""), "?"))
    return table


# ---------------------------------------------------------------------------- commands


def plan(ctx: typer.Context, bundle: Bundle, inventory: o.Inventory = None, site: o.Site = None,
         group: o.Group = None, tag: o.Tag = None, limit: o.Limit = None,
         policy_file: r.PolicyFile = None, batches: r.Batches = None,
         max_fail_percentage: r.MaxFailPct = None, max_failures: r.MaxFailures = None,
         concurrency: r.Concurrency = None, per_site_concurrency: r.PerSite = None,
         order: r.Order = None, seed: r.Seed = None, canary_tag: r.Canary = None,
         offline: r.Offline = None, offline_wait: r.OfflineWait = None,
         device_timeout: r.DeviceTimeout = None, pause_after_batch: r.Pause = None,
         engine: r.Engine = "ssh", json: o.Json = False) -> None:
    """Show the batches, which devices would change and which are current; change nothing."""
    from fleet import inventory as inv
    from fleet.rollout import batches as batching
    from fleet.rollout.iot_jobs import translate
    from fleet.rollout.settings import policy_for
    from fleet.rollout.update import OtaWork

    a = app_of(ctx)
    with a.guarded():
        policy = policy_for(a.project, policy_file, r.policy_flags(**locals()))
        work = OtaWork.for_bundle(a.project, bundle)
        nr = inv.select(a.project, inv.Selection.of(inventory, site, group, tag, limit))
    hosts = list(nr.inventory.hosts.values())
    planned = [[h.name for h in b] for b in batching.plan(hosts, policy, batching.describe_host)]
    facts = {n: res[0].result for n, res in nr.run(task=work.decide).items()}
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
    _print_plan(a, planned, facts, sites, work.version)
    if engine == "iot-jobs":
        a.output_json(out["iot_jobs"])


def _print_plan(a: CliContext, planned: list[list[str]], facts: dict[str, dict[str, Any]],
                sites: dict[str, str], version: str) -> None:
    a.output(plan_table(planned, facts, sites, version))
    counts = {k: sum(1 for f in facts.values() if f.get("state") == k)
              for k in ("change", "current", "offline", "refused")}
    refused = f", {counts['refused']} refused" if counts["refused"] else ""
    a.output(f"{counts['change']} to update, {counts['current']} already at {version}, "
             f"{counts['offline']} offline{refused}")
    for name, fact in sorted(facts.items()):
        if fact.get("state") == "refused":
            a.output(f"  {name}: {fact.get('reason')}")


def rollout(ctx: typer.Context, bundle: Bundle, inventory: o.Inventory = None,
            site: o.Site = None, group: o.Group = None, tag: o.Tag = None,
            limit: o.Limit = None, policy_file: r.PolicyFile = None, batches: r.Batches = None,
            max_fail_percentage: r.MaxFailPct = None, max_failures: r.MaxFailures = None,
            concurrency: r.Concurrency = None, per_site_concurrency: r.PerSite = None,
            order: r.Order = None, seed: r.Seed = None, canary_tag: r.Canary = None,
            offline: r.Offline = None, offline_wait: r.OfflineWait = None,
            device_timeout: r.DeviceTimeout = None, pause_after_batch: r.Pause = None,
            engine: r.Engine = "ssh", bucket: r.Bucket = None, role_arn: r.RoleArn = None,
            json: o.Json = False) -> None:
    """Roll BUNDLE out across the selection in batches under the policy.

    Exit codes: 0 every device updated or current (or paused), 1 anything failed,
    stopped, skipped or aborted, 2 bad usage (refused before any device is touched).
    """
    from fleet import inventory as inv
    from fleet.rollout import engine as rollout_engine
    from fleet.rollout import iot_rollout
    from fleet.rollout.settings import aws_settings, policy_for, selection_dict
    from fleet.rollout.update import OtaWork

    a = app_of(ctx)
    with a.guarded():
        policy = policy_for(a.project, policy_file, r.policy_flags(**locals()))
        sel = inv.Selection.of(inventory, site, group, tag, limit)
        nr = inv.select(a.project, sel, num_workers=policy.concurrency)
        if engine == "iot-jobs":
            settings = aws_settings(a.project, bucket, role_arn)
            report, made = iot_rollout.start(a.project, nr, OtaWork.for_bundle(a.project, bundle),
                                             policy, sel, settings)
            a.display_info(f"IoT job {made['job_id']} created; bundle at {made['s3']}")
            finish(a, report, json, handed_off=True)
        if engine != "ssh":
            raise UsageError(f"--engine {engine!r} is not ssh or iot-jobs")
        with display(a, json, "rollout") as view:
            work = OtaWork.for_bundle(a.project, bundle, progress=view.progress)
            work.reboot_timeout = policy.offline_wait
            report = rollout_engine.start(a.project, nr, work, policy,
                                          selection=selection_dict(sel), sinks=[view])
    finish(a, report, json)


def status(ctx: typer.Context, rollout_id: r.RolloutId = None, json: o.Json = False) -> None:
    """Where a rollout stands, replayed from its journal (IoT jobs: from their executions)."""
    from fleet.rollout import engine as rollout_engine
    from fleet.rollout import iot_rollout

    a = app_of(ctx)
    with a.guarded():
        report = rollout_engine.status(a.project, rollout_id)
        if report.header.get("engine") == iot_rollout.ENGINE:
            report = iot_rollout.status(report)
    if json:
        a.output_json(report.to_dict())
        return
    a.output(summary(report))


def resume(ctx: typer.Context, rollout_id: r.RolloutId = None, json: o.Json = False) -> None:
    """Continue an interrupted or paused rollout: finished devices are not touched, devices
    that were in flight are checked (their reported version decides), never installed twice."""
    _continue(app_of(ctx), rollout_id, json, "resume")


def retry(ctx: typer.Context, rollout_id: r.RolloutId = None,
          failed: Annotated[bool, typer.Option(
              "--failed", help="rerun failed, skipped and never-reached devices")] = False,
          json: o.Json = False) -> None:
    """Rerun the devices of a finished rollout that did not succeed (requires --failed)."""
    a = app_of(ctx)
    if not failed:
        a.abort("say which devices to retry: --failed", code=2)
    _continue(a, rollout_id, json, "retry")


def _continue(a: CliContext, rollout_id: str | None, json: bool, verb: str) -> None:
    """`resume` or `retry` an existing rollout of any kind (the engine function of that name)."""
    from fleet.rollout import engine as rollout_engine
    from fleet.rollout import iot_rollout
    from fleet.rollout.settings import nornir_for
    from fleet.rollout.work import work_from_header

    with a.guarded():
        header = rollout_engine.status(a.project, rollout_id).header
        if header.get("engine") == iot_rollout.ENGINE:
            raise UsageError("IoT Jobs rollouts run in AWS: nothing to resume here",
                             fix="watch them with `fleet ota status`")
        with display(a, json, verb) as view:
            work = work_from_header(a.project, header, progress=view.progress)
            report = getattr(rollout_engine, verb)(a.project, rollout_id,
                                                   nornir_for(a.project, header), work,
                                                   sinks=[view])
    finish(a, report, json)


def abort(ctx: typer.Context, rollout_id: r.RolloutId = None,
          reason: Annotated[str, typer.Option(
              help="recorded in the journal")] = "aborted by operator",
          json: o.Json = False) -> None:
    """Stop scheduling new devices; devices in flight finish or roll back."""
    from fleet.rollout import engine as rollout_engine
    from fleet.rollout import iot_rollout

    a = app_of(ctx)
    with a.guarded():
        before = rollout_engine.status(a.project, rollout_id)
        if before.header.get("engine") == iot_rollout.ENGINE:
            report = iot_rollout.abort(before, reason)
        else:
            report = rollout_engine.abort(a.project, rollout_id, reason)
    if json:
        a.output_json(report.to_dict())
    elif report.status == "aborted":
        a.display_success(f"rollout {report.id} aborted")
    else:
        a.display_info(f"abort requested: rollout {report.id} stops scheduling; "
                       "devices in flight finish or roll back")
