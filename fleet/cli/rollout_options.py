"""The options of every command that rolls something out, declared once.

`fleet ota plan|rollout` use them today; a later noun that rolls out (``fleet
app``) takes the same ones, so a policy flag means the same everywhere. Each
flag left out keeps the value from ``--policy FILE``, then fleet.yaml's
``rollout:`` section (``fleet.rollout.settings.policy_for``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

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


POLICY_FLAGS = ("batches", "max_fail_percentage", "max_failures", "concurrency",
                "per_site_concurrency", "order", "seed", "canary_tags", "offline",
                "offline_wait", "device_timeout", "pause_after_batch")


def policy_flags(**given: Any) -> dict[str, Any]:
    """The policy flags of a command's arguments (``canary_tag`` is the repeatable
    ``--canary-tag``), keyed as the policy names them."""
    given["canary_tags"] = given.pop("canary_tag", None)
    return {k: given[k] for k in POLICY_FLAGS if k in given}
