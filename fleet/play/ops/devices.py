"""``devices.register``: the task's device in the registry, with what it reports.

`fleet.registry.devices.register` for one inventory host (idempotent: site,
serial, hardware, address, tags, pinned host key and issued certificate), then,
with `contact`, `refresh`: the device's own answer sets its status and software.
Check mode compares the inventory's fields with the registry's record.
"""

from __future__ import annotations

from typing import Any

from fleet.play.operations import OpContext, Outcome, operation
from fleet.play.ops._host import host_of, solo
from fleet.registry import devices, open_registry
from fleet.registry.hosts import entries


@operation("devices.register")
def register(ctx: OpContext, *, contact: bool = True) -> Outcome:
    """Register (or update) the device; with `contact`, record what it reports."""
    host = host_of(ctx)
    with open_registry(ctx.project) as registry:
        diff = _diff(entries([host], ctx.project.known_hosts)[0][1],
                     registry.get_device(host.name))
        if ctx.check:
            return Outcome(changed=bool(diff), diff=diff or None)
        result = devices.register(ctx.project, registry, [host])
        rows = devices.refresh(registry, solo(host)) if contact else []
    changed = host.name not in result["unchanged"] or bool(result["certificates"])
    data: dict[str, Any] = {"status": rows[0]["status"], "software": rows[0]["software"],
                            "reason": rows[0]["reason"]} if rows else {}
    return Outcome(changed=changed, data=data, diff=diff or None)


def _diff(wanted: dict[str, Any], record: dict[str, Any] | None) -> dict[str, Any]:
    """What registering would change: every field the record lacks or holds otherwise."""
    if record is None:
        return {"registered": {"before": False, "after": True},
                **{k: {"before": None, "after": v} for k, v in sorted(wanted.items())}}
    if "tags" in wanted:  # registering merges tags into the ones already there
        wanted = {**wanted, "tags": {**(record.get("tags") or {}), **wanted["tags"]}}
    return {k: {"before": record.get(k), "after": v} for k, v in sorted(wanted.items())
            if record.get(k) != v}
