"""A rollout handed to AWS IoT Jobs (``--engine iot-jobs``), for any registered work kind.

`start` journals the rollout like a local one (header with the work's kind,
policy, selection and the AWS settings), uploads the work's artifact and
creates the job (``iot_jobs.IotJobs``), then closes the journal: the cloud
runs it from there. `status` and `abort` read and cancel the job whose id is
the rollout id. The translation of the policy is in ``iot_jobs.py``.

>>> report, made = start(project, nr, work, policy, sel, settings)   # doctest: +SKIP
>>> status(report).counts()                                    # doctest: +SKIP
{'pending': 3}
"""

from __future__ import annotations

from typing import Any

from nornir.core import Nornir
from nornir.core.inventory import Host

from fleet import inventory as inv
from fleet.project import Project
from fleet.rollout import batches as batching
from fleet.rollout.iot_jobs import AwsTarget, IotJobs, report_from_executions
from fleet.rollout.journal import Journal
from fleet.rollout.policy import Policy
from fleet.rollout.report import Report
from fleet.rollout.settings import AWS_KEYS, selection_dict
from fleet.rollout.work import Work

ENGINE = "iot-jobs"


def jobs(settings: dict[str, Any]) -> IotJobs:
    """The IoT Jobs client for a rollout's AWS settings (from its journal header)."""
    return IotJobs(AwsTarget(**{k: settings[k] for k in AWS_KEYS if settings.get(k) is not None}))


def start(project: Project, nr: Nornir, work: Work, policy: Policy, sel: inv.Selection,
          settings: dict[str, Any]) -> tuple[Report, dict[str, Any]]:
    """Journal the rollout, upload the artifact, create the job: the report as AWS has it
    and what was made (``job_id``, ``job_arn``, ``s3``, ``sha256``)."""
    hosts = list(nr.inventory.hosts.values())
    things = [h.name for h in hosts]
    header = {**work.header(), **settings, "policy": policy.to_dict(), "engine": ENGINE,
              "selection": selection_dict(sel)}
    shared = getattr(work, "job_release", None)  # an app's shared release fields
    release = shared() if callable(shared) else None
    journal = Journal.create(project, header=header, devices=things)
    try:
        made = jobs(settings).create(journal.id, work.artifact, work.version, policy, things,
                                     whole_sites(project, sel, hosts), kind=work.kind,
                                     release=release)
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
    return status(journal.report()), made


def status(report: Report) -> Report:
    """The journaled report with each device's job execution folded in."""
    client = jobs(report.header)  # the job id is the rollout id
    return report_from_executions(report, client.job(report.id), client.executions(report.id))


def abort(report: Report, reason: str) -> Report:
    """Stop handing the job out; executions already running finish."""
    jobs(report.header).cancel(report.id, reason)
    return status(report)


def whole_sites(project: Project, sel: inv.Selection, hosts: list[Host]) -> dict[str, list[str]]:
    """{site: devices} when the selection is exactly whole sites, else {} (target things)."""
    if sel.groups or sel.tags or sel.limit:
        return {}
    everyone = inv.select(project, inv.Selection(inventory=sel.inventory))
    out: dict[str, list[str]] = {}
    for h in hosts:
        out.setdefault(batching.describe_host(h).site, []).append(h.name)
    for h in everyone.inventory.hosts.values():
        site = batching.describe_host(h).site
        if site in out and h.name not in out[site]:
            return {}
    return out

