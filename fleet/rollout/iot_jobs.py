"""The scale path: a rollout policy as an AWS IoT Job (`fleet ota rollout --engine iot-jobs`).

AWS IoT Jobs runs the rollout in the cloud; each device's `fleet-agent
daemon` takes the job over MQTT (runtime ``fleet_runtime/agent/jobs.py``).
The translation, field by field:

* ``batches`` + ``concurrency`` -> ``jobExecutionsRolloutConfig``:
  ``maximumPerMinute`` = concurrency; growing batches add ``exponentialRate``
  (base = first batch, factor = growth of the second, raised only after the
  first batch's worth of devices *succeeded*);
* ``max_fail_percentage`` -> ``abortConfig.criteriaList`` (ALL failure types,
  CANCEL, minimum executed = first batch). IoT Jobs aborts at >= threshold,
  Ansible at > threshold, so the threshold is nudged by 0.01;
* ``device_timeout`` -> ``timeoutConfig.inProgressTimeoutInMinutes`` (rounded up);
* the bundle -> S3 (uploaded here) and named in the job document by a URL
  presigned for the device: IoT's ``${aws:iot:s3-presigned-url:...}``
  placeholder when a role is given, else one presigned by this command.

Fields IoT Jobs cannot express (``max_failures``, ``per_site_concurrency``,
``order``, ``offline``, ``pause_after_batch``) are listed in `notes` so
`plan` shows them instead of dropping them silently.

>>> config = job_config(Policy(batches=(1, "10%", "100%"), concurrency=10), total=50)
>>> config["jobExecutionsRolloutConfig"]["exponentialRate"]["baseRatePerMinute"]
1
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet_runtime.bundle import sha256_file

from fleet.errors import ConfigError, FleetError
from fleet.rollout.batches import batch_sizes
from fleet.rollout.policy import Policy
from fleet.rollout.report import (
    FAILED,
    IN_FLIGHT,
    NOT_RUN,
    PENDING,
    SUCCEEDED,
    Report,
)

STEPS = ["download", "install", "activate", "reboot", "commit"]
APP_STEPS = ["download", "stage", "activate", "health", "commit"]  # runtime agent/app_jobs.py
PRESIGN_EXPIRY_S = 3600 * 24
EXECUTION_OUTCOME = {
    "QUEUED": PENDING, "IN_PROGRESS": IN_FLIGHT, "SUCCEEDED": SUCCEEDED,
    "FAILED": FAILED, "TIMED_OUT": FAILED, "REJECTED": FAILED,
    "CANCELED": NOT_RUN, "REMOVED": NOT_RUN,
}
UNMAPPED = {
    "max_failures": "IoT Jobs has no absolute failure count; enforced only by local rollouts",
    "per_site_concurrency": "IoT Jobs rate limits are per job, not per site",
    "order": "IoT Jobs picks the order of executions itself",
    "offline": "offline devices simply take the job when they reconnect",
    "pause_after_batch": "IoT Jobs has no pause between batches",
}


@dataclass
class Translation:
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def rollout_config(policy: Policy, total: int) -> dict[str, Any]:
    sizes = batch_sizes(policy.batches, total) or [1]
    config: dict[str, Any] = {"maximumPerMinute": max(1, min(1000, policy.concurrency))}
    if len(sizes) > 1 and sizes[1] > sizes[0]:
        factor = min(5.0, max(1.1, round(sizes[1] / sizes[0], 1)))
        config["exponentialRate"] = {
            "baseRatePerMinute": max(1, min(1000, sizes[0], policy.concurrency)),
            "incrementFactor": factor,
            "rateIncreaseCriteria": {"numberOfSucceededThings": sizes[0]},
        }
    return config


def abort_config(policy: Policy, total: int) -> dict[str, Any] | None:
    pct = policy.max_fail_percentage
    if pct is None:  # Ansible's default: stop when a whole batch fails
        pct = 99.99
    if pct >= 100:
        return None
    first = (batch_sizes(policy.batches, total) or [1])[0]
    return {"criteriaList": [{
        "failureType": "ALL", "action": "CANCEL",
        "thresholdPercentage": round(min(100.0, pct + 0.01), 2),
        "minNumberOfExecutedThings": max(1, first),
    }]}


def job_config(policy: Policy, total: int) -> dict[str, Any]:
    """The CreateJob fields that carry the policy."""
    config: dict[str, Any] = {
        "jobExecutionsRolloutConfig": rollout_config(policy, total),
        "timeoutConfig": {"inProgressTimeoutInMinutes":
                          max(1, min(10080, math.ceil(policy.device_timeout / 60)))},
    }
    abort = abort_config(policy, total)
    if abort:
        config["abortConfig"] = abort
    return config


def translate(policy: Policy, total: int) -> Translation:
    defaults = Policy()
    notes = [f"{name}: {why}" for name, why in UNMAPPED.items()
             if getattr(policy, name) != getattr(defaults, name)]
    return Translation(job_config(policy, total), notes)


def job_document(url: str, *, version: str, sha256: str, size: int, name: str,
                 kind: str = "ota", release: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a device's jobs handler reads (runtime jobs.py is its only reader); the
    operation names the work kind (``fleet-ota``, ``fleet-app``). `release` holds the
    fields every device shares (an app's health thresholds and camera URIs)."""
    doc = {"operation": f"fleet-{kind}", "version": version,
           "steps": APP_STEPS if kind == "app" else STEPS,
           "bundle": {"url": url, "sha256": sha256, "size": size, "name": name}}
    if release is not None:
        doc["release"] = dict(release)
    return doc


@dataclass(frozen=True)
class AwsTarget:
    bucket: str
    region: str | None = None
    role_arn: str | None = None  # IoT presigns per device with this role when given
    prefix: str = "edgefleet/bundles"
    group_prefix: str = "edgefleet-"  # the aws registry's site thing groups: <prefix><site>
    endpoint_url: str | None = None  # as the aws registry's; AWS_ENDPOINT_URL works too


class IotJobs:
    """Creates, reads and cancels rollout jobs with unmodified boto3 (endpoint from the
    environment, e.g. AWS_ENDPOINT_URL for moto's server)."""

    def __init__(self, target: AwsTarget) -> None:
        import boto3

        self.target = target
        self.iot = boto3.client("iot", region_name=target.region, endpoint_url=target.endpoint_url)
        self.s3 = boto3.client("s3", region_name=target.region, endpoint_url=target.endpoint_url)

    def upload(self, bundle: Path) -> tuple[str, str]:
        """Put the bundle in S3 under its SHA-256; returns (key, sha256)."""
        digest = sha256_file(bundle)
        key = f"{self.target.prefix}/{digest}/{bundle.name}"
        self.s3.upload_file(str(bundle), self.target.bucket, key)
        return key, digest

    def bundle_url(self, key: str) -> tuple[str, dict[str, Any] | None]:
        """(URL for the document, presignedUrlConfig or None)."""
        if self.target.role_arn:
            placeholder = f"${{aws:iot:s3-presigned-url:https://s3.amazonaws.com/{self.target.bucket}/{key}}}"
            return placeholder, {"roleArn": self.target.role_arn, "expiresInSec": 3600}
        url = self.s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.target.bucket, "Key": key},
            ExpiresIn=PRESIGN_EXPIRY_S)
        return url, None

    def targets(self, things: Iterable[str], sites: dict[str, list[str]] | None) -> list[str]:
        """Site thing group ARNs (as the aws registry names them) for whole sites, else the
        things' ARNs."""
        if sites:
            return [self._group_arn(site, members) for site, members in sorted(sites.items())]
        return [self.iot.describe_thing(thingName=t)["thingArn"] for t in things]

    def _group_arn(self, site: str, members: list[str]) -> str:
        name = f"{self.target.group_prefix}{site}"
        try:
            arn = self.iot.describe_thing_group(thingGroupName=name)["thingGroupArn"]
        except self.iot.exceptions.ResourceNotFoundException:
            arn = self.iot.create_thing_group(thingGroupName=name)["thingGroupArn"]
        for thing in members:
            self.iot.add_thing_to_thing_group(thingGroupName=name, thingName=thing)
        return str(arn)

    def create(self, job_id: str, bundle: Path, version: str, policy: Policy,
               things: list[str], sites: dict[str, list[str]] | None = None,
               kind: str = "ota", release: dict[str, Any] | None = None) -> dict[str, Any]:
        """Upload, then CreateJob for a rollout of work `kind`; returns what the journal
        keeps about it."""
        self._check_things(things)
        key, digest = self.upload(bundle)
        url, presign = self.bundle_url(key)
        document = job_document(url, version=version, sha256=digest,
                                size=bundle.stat().st_size, name=bundle.name, kind=kind,
                                release=release)
        extra = {"presignedUrlConfig": presign} if presign else {}
        answer = self.iot.create_job(
            jobId=job_id, targets=self.targets(things, sites), document=json.dumps(document),
            description=f"edgefleet {kind.upper()} {version}", targetSelection="SNAPSHOT",
            **job_config(policy, len(things)), **extra)
        return {"job_id": answer["jobId"], "job_arn": answer["jobArn"],
                "s3": f"s3://{self.target.bucket}/{key}", "sha256": digest}

    def _check_things(self, things: list[str]) -> None:
        missing = []
        for thing in things:
            try:
                self.iot.describe_thing(thingName=thing)
            except self.iot.exceptions.ResourceNotFoundException:
                missing.append(thing)
        if missing:
            raise ConfigError(f"not registered in AWS IoT: {', '.join(missing[:5])}",
                              fix="register the devices (`fleet registry` with the aws backend)")

    def executions(self, job_id: str) -> dict[str, dict[str, Any]]:
        """{thing: {"status", "outcome", "details"}} from ListJobExecutionsForJob."""
        out: dict[str, dict[str, Any]] = {}
        pages = self.iot.get_paginator("list_job_executions_for_job").paginate(jobId=job_id)
        for page in pages:
            for item in page.get("executionSummaries", []):
                thing = str(item["thingArn"]).rsplit("/", 1)[-1]
                status = item["jobExecutionSummary"]["status"]
                out[thing] = {"status": status, "outcome": EXECUTION_OUTCOME.get(status, PENDING)}
        return out

    def job(self, job_id: str) -> dict[str, Any]:
        try:
            return dict(self.iot.describe_job(jobId=job_id)["job"])
        except self.iot.exceptions.ResourceNotFoundException as exc:
            raise FleetError(f"no IoT job '{job_id}'", fix="check the rollout id") from exc

    def cancel(self, job_id: str, reason: str) -> None:
        """Stop handing out the job; executions already in progress finish (force=False)."""
        self.iot.cancel_job(jobId=job_id, reasonCode="fleet-ota-abort", comment=reason[:2028])


def report_from_executions(report: Report, job: dict[str, Any],
                           executions: dict[str, dict[str, Any]]) -> Report:
    """Fold IoT job executions into a rollout Report for `fleet ota status`. Devices with no
    execution yet stay pending; executions of things outside the rollout are ignored."""
    for name in report.header.get("devices", []):
        report.device(name)
    for thing, ex in executions.items():
        if thing in report.devices:
            dev = report.devices[thing]
            dev.outcome, dev.reason = ex["outcome"], ex["status"]
    status = str(job.get("status", ""))
    report.status = {"COMPLETED": "completed", "CANCELED": "aborted",
                     "DELETION_IN_PROGRESS": "aborted"}.get(status, "running")
    report.reason = str(job.get("comment") or job.get("reasonCode") or f"IoT job {status}")
    return report
