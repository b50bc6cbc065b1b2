"""Fleet health: the agent's checks on every selected device, plus what only the
controller can judge (clock skew, reachability). Results are data; only the CLI
turns them into exit codes.

>>> reports = sweep(project, nr)                     # doctest: +SKIP
>>> summarize(reports)["unreachable"]                # doctest: +SKIP
0
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from nornir.core import Nornir
from nornir.core.task import Result, Task

from fleet.agent import agent_for
from fleet.errors import FleetError
from fleet.project import Project

VERDICTS = ("healthy", "degraded", "failing", "revoked", "unreachable", "offline")
EXIT_HEALTHY, EXIT_DEGRADED, EXIT_UNREACHABLE = 0, 1, 2


@dataclass
class DeviceHealth:
    name: str
    site: str
    verdict: str
    reason: str = ""
    software: str | None = None
    slot: str | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    apps: list[dict[str, Any]] = field(default_factory=list)  # version, state, fps, cameras

    def check(self, name: str) -> dict[str, Any]:
        return next((c for c in self.checks if c["name"] == name), {})

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def agent_flags(project: Project) -> list[str]:
    h = project.config["health"]
    return ["--disk-warn", str(h["disk_warn_pct"]), "--disk-fail", str(h["disk_fail_pct"]),
            "--mem-warn", str(h["mem_warn_pct"]), "--mem-fail", str(h["mem_fail_pct"]),
            "--cert-warn-days", str(h["cert_warn_days"]), "--min-fps", str(h["min_fps"]),
            "--load-warn", str(h["load_warn_per_cpu"])]


def health_task(task: Task, flags: list[str], skew_warn_s: float) -> Result:
    """Nornir task: the device's health report, with the controller's clock-skew check."""
    _drop_dead_connection(task)
    sent = time.time()
    report = agent_for(task).health(*flags).answer
    received = time.time()
    report["checks"].append(skew_check(report, sent, received, skew_warn_s))
    return Result(host=task.host, result=report)


def skew_check(report: dict[str, Any], sent: float, received: float, warn_s: float) -> dict[str, Any]:
    device_time = next((c.get("time") for c in report["checks"] if c["name"] == "clock"), None)
    if device_time is None:
        return {"name": "clock-skew", "status": "warn", "reason": "device reports no time"}
    midpoint = (sent + received) / 2
    skew = float(device_time) - midpoint
    slack = (received - sent) / 2
    bad = abs(skew) > warn_s + slack
    return {"name": "clock-skew", "status": "warn" if bad else "ok", "skew_s": round(skew, 3),
            "reason": f"clock off by {skew:+.1f}s" if bad else ""}


def _drop_dead_connection(task: Task) -> None:
    """A connection kept from an earlier round (`--watch`) whose device went away is
    closed here, so this round opens a fresh one instead of failing on the old."""
    from fleet.transport import CONNECTION_NAME

    kept = task.host.connections.get(CONNECTION_NAME)
    if kept is not None and not kept.connection.transport.is_active():
        task.host.close_connection(CONNECTION_NAME)


def sweep(project: Project, nr: Nornir, *, processors: list[Any] | None = None,
          keep_connections: bool = False) -> list[DeviceHealth]:
    """Run the health task on every host of `nr` in parallel; one DeviceHealth per host.

    With `keep_connections` (``--watch``) each device's SSH connection stays open for
    the next round: a sweep then costs one command per device, not a key exchange.
    """
    flags = agent_flags(project)
    skew = float(project.config["health"]["clock_skew_warn_s"])
    runner = nr.with_processors(processors) if processors else nr
    results = runner.run(task=health_task, flags=flags, skew_warn_s=skew, on_failed=True)
    reports = [to_health(nr, name, multi) for name, multi in results.items()]
    if keep_connections:
        for name, multi in results.items():
            if multi.failed:  # a device that failed reconnects next round
                nr.inventory.hosts[name].close_connections()
    else:
        nr.close_connections(on_failed=True)
    apply_targets(reports, software_targets(project, [r.name for r in reports]))
    apply_revocations(project, reports)
    return sorted(reports, key=lambda r: (r.site, r.name))


def apply_revocations(project: Project, reports: list[DeviceHealth]) -> None:
    """Look every device certificate up in the fleet CRL: a revoked one fails its
    `certificate` check and makes the verdict `revoked`, whatever its expiry date says."""
    if not any(r.check("certificate").get("serial") for r in reports):
        return  # no certificate to look up: spare the CRL and cryptography's x509 (#19)
    from fleet import pki

    issuer, revoked = pki.revoked_serials(project)
    for r in reports:
        cert = r.check("certificate")
        when = revoked.get(str(cert.get("serial"))) if cert.get("issuer") == issuer else None
        if when is None:
            continue
        reason = f"device certificate {cert['serial']} revoked on {when:%Y-%m-%d}"
        cert.update(status="fail", revoked=True, reason=reason)
        r.verdict = "revoked"
        r.reason = "; ".join(x for x in (reason, r.reason) if x)


def software_targets(project: Project, names: list[str]) -> dict[str, str]:
    """Target software version per device from the registry (none when there is no registry)."""
    backend = (project.config.get("registry") or {}).get("backend", "sqlite")
    if backend == "sqlite" and not (project.state_dir / "registry.db").exists():
        return {}
    try:
        from fleet.registry import open_registry

        with open_registry(project) as registry:
            records = registry.list_devices(names=names)
    except FleetError:
        return {}  # health never fails because the registry is unavailable
    return {r["name"]: str(r["software_target"]) for r in records if r.get("software_target")}


def apply_targets(reports: list[DeviceHealth], targets: dict[str, str]) -> None:
    """Add a `version` check: the software a device runs against its registry target."""
    for r in reports:
        target = targets.get(r.name)
        if target is None or r.verdict in ("unreachable", "offline"):
            continue
        behind = r.software != target
        reason = f"runs {r.software}, target {target}" if behind else ""
        r.checks.append({"name": "version", "status": "warn" if behind else "ok",
                         "reason": reason, "software": r.software, "target": target})
        if behind:
            r.verdict = "degraded" if r.verdict == "healthy" else r.verdict
            r.reason = "; ".join(x for x in (r.reason, reason) if x)


def to_health(nr: Nornir, name: str, multi: Any) -> DeviceHealth:
    site = str(nr.inventory.hosts[name].get("site", "?"))
    first = multi[0]
    if first.failed:
        return DeviceHealth(name, site, "unreachable", failure_reason(first.exception))
    report = first.result
    reasons = [c["reason"] for c in report["checks"] if c["status"] != "ok" and c.get("reason")]
    return DeviceHealth(name, site, _verdict(report["checks"]), "; ".join(reasons),
                        report.get("software"), report.get("slot"), report["checks"],
                        apps_of(report["checks"]))


def apps_of(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each application's version, state, fps and cameras, from the same health answer."""
    from fleet.facts import Apps

    found = Apps.from_answer(checks)
    return [found.apps[n].as_json() for n in found.names()]


def _verdict(checks: list[dict[str, Any]]) -> str:
    statuses = {c["status"] for c in checks}
    return "failing" if "fail" in statuses else "degraded" if "warn" in statuses else "healthy"


def failure_reason(exc: BaseException | None) -> str:
    if isinstance(exc, FleetError):
        return exc.line()
    return f"{type(exc).__name__}: {exc}" if exc else "unknown failure"


def summarize(reports: list[DeviceHealth]) -> dict[str, Any]:
    """Counts per verdict, and the devices that are not healthy by name, so a script
    reading only the summary learns who needs attention, not just how many."""
    counts: dict[str, Any] = {v: 0 for v in VERDICTS}
    for r in reports:
        counts[r.verdict] += 1
    counts["total"] = len(reports)
    counts["not_healthy"] = [{"name": r.name, "site": r.site, "verdict": r.verdict,
                              "reason": r.reason} for r in reports if r.verdict != "healthy"]
    return counts


def exit_code(reports: list[DeviceHealth]) -> int:
    verdicts = {r.verdict for r in reports}
    if verdicts & {"unreachable", "offline"}:
        return EXIT_UNREACHABLE
    return EXIT_DEGRADED if verdicts & {"degraded", "failing", "revoked"} else EXIT_HEALTHY
