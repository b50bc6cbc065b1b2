"""A rollout's settings merged from their three sources: fleet.yaml, a policy file, flags.

Later sources win: the ``rollout:`` section of fleet.yaml, then ``--policy
FILE``, then each flag given. The IoT Jobs engine's AWS settings merge the
same way from ``rollout.iot_jobs`` and the registry section.

>>> policy_for(project, None, {"batches": "1,50%"}).batches     # doctest: +SKIP
(1, '50%')
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from nornir.core import Nornir

from fleet.errors import UsageError
from fleet.inventory import Selection
from fleet.project import Project
from fleet.rollout.policy import Policy, resolve

AWS_KEYS = ("bucket", "region", "endpoint_url", "role_arn", "group_prefix")


def policy_for(project: Project, policy_file: Path | None, flags: dict[str, Any]) -> Policy:
    """The policy a rollout runs under; `flags` left None keep the value below them."""
    section = {k: v for k, v in project.config.get("rollout", {}).items() if k != "iot_jobs"}
    if flags.get("canary_tags") == []:
        flags = {**flags, "canary_tags": None}
    return resolve(section, policy_file, flags)


def aws_settings(project: Project, bucket: str | None, role_arn: str | None) -> dict[str, Any]:
    """Where an IoT Jobs rollout puts the artifact and which account it talks to."""
    section = dict(project.config.get("rollout", {}).get("iot_jobs") or {})
    registry = project.config.get("registry", {})
    settings = {"bucket": bucket or section.get("bucket"),
                "region": section.get("region") or registry.get("region"),
                "endpoint_url": section.get("endpoint_url") or registry.get("endpoint_url"),
                "role_arn": role_arn or section.get("role_arn"),
                "group_prefix": registry.get("group_prefix", "edgefleet-")}
    if not settings["bucket"]:
        raise UsageError("--engine iot-jobs needs an S3 bucket for the bundle",
                         fix="pass --bucket NAME or set rollout.iot_jobs.bucket in fleet.yaml")
    return settings


def selection_dict(sel: Selection) -> dict[str, Any]:
    """The selection as the journal header keeps it (resume selects the same inventory)."""
    return {"inventory": sel.inventory, "sites": list(sel.sites), "groups": list(sel.groups),
            "tags": list(sel.tags), "limit": list(sel.limit)}


def nornir_for(project: Project, header: dict[str, Any]) -> Callable[[list[str]], Nornir]:
    """``nr_for(names)``: the journaled rollout's inventory narrowed to `names`, with its
    policy's concurrency (resume and retry select devices this way)."""
    from fleet import inventory as inv

    sel = header.get("selection", {})
    workers = int(header.get("policy", {}).get("concurrency", 10))

    def nr_for(names: list[str]) -> Nornir:
        chosen = inv.Selection(inventory=sel.get("inventory"), limit=tuple(names))
        return inv.select(project, chosen, num_workers=workers)

    return nr_for
