"""``cameras.import`` (once per play) and ``cameras.probe`` (per device).

`cameras.import` is `fleet.cameras.import_cameras`: the whole CSV validated
against the registry, then written in one transaction or not at all; check mode
is the importer's own dry run (the very cameras it would create or update).
`cameras.probe` DESCRIBEs the device's registered cameras (`fleet.camera_probe`),
from the device or from the controller, and records each status; check mode
probes and shows the status changes without recording them. Camera passwords
stay in the registry: never in data, message or diff.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleet import camera_probe
from fleet.cameras import Limits, import_cameras
from fleet.errors import ConfigError
from fleet.play.operations import OpContext, Outcome, operation
from fleet.play.ops._host import host_of, solo
from fleet.registry import open_registry

VIA = ("device", "controller")


@operation("cameras.import", scope="once")
def import_csv(ctx: OpContext, *, csv: str, on_conflict: str = "fail") -> Outcome:
    """Import the cameras of `csv` (a path, relative to the project)."""
    path = Path(csv) if Path(csv).is_absolute() else ctx.project.root / csv
    limits = Limits.from_config(ctx.project.config.get("cameras") or {})
    with open_registry(ctx.project) as registry:
        result = import_cameras(registry, path, limits, on_conflict=on_conflict,
                                dry_run=ctx.check)
    if not result.ok:
        first = result.errors[0]
        more = f" (and {len(result.errors) - 1} more)" if len(result.errors) > 1 else ""
        return Outcome(failed=True, msg=f"{csv}:{first.row}: {first.column}: "
                                        f"{first.message}{more}")
    diff = {"created": {"before": [], "after": sorted(result.created)},
            "updated": {"before": [], "after": sorted(result.updated)}}
    changed = bool(result.created or result.updated)
    data = {"created": sorted(result.created), "updated": sorted(result.updated),
            "skipped": sorted(result.skipped)}
    return Outcome(changed=changed, data=data, diff=diff if changed else None)


@operation("cameras.probe")
def probe(ctx: OpContext, *, via: str = "device", timeout: float = 5.0,
          require_reachable: bool = True) -> Outcome:
    """DESCRIBE each camera bound to the device; fail it when one is not REACHABLE."""
    if via not in VIA:
        raise ConfigError(f"cameras.probe: via {via!r} is not one of {', '.join(VIA)}")
    host = host_of(ctx)
    with open_registry(ctx.project) as registry:
        cams = registry.list_cameras(devices=[host.name])
        if not cams:
            return Outcome(msg="no cameras registered for this device")
        outcomes = (camera_probe.probe_from_devices(solo(host), registry, cams, timeout)
                    if via == "device" else
                    camera_probe.probe_from_controller(registry, cams, timeout))
        if not ctx.check:
            camera_probe.record_probes(registry, outcomes)
    return _outcome(cams, outcomes, require_reachable)


def _outcome(cams: list[dict[str, Any]], outcomes: list[dict[str, Any]],
             require_reachable: bool) -> Outcome:
    before = {c["name"]: c.get("status") for c in cams}
    diff = {f"camera {o['name']}": {"before": before.get(o["name"]), "after": o["status"]}
            for o in outcomes if before.get(o["name"]) != o["status"]}
    bad = [f"{o['name']}: {o['status']}" for o in outcomes if o["status"] != "REACHABLE"]
    data = {"cameras": {o["name"]: {"status": o["status"], "codec": o.get("codec")}
                        for o in outcomes}}
    return Outcome(changed=bool(diff), failed=bool(bad) and require_reachable,
                   msg="; ".join(bad), data=data, diff=diff or None)
