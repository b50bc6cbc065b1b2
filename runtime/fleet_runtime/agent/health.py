"""`fleet-agent health`: checks, each ``{"name", "status": ok|warn|fail, "reason", ...}``.

Readings are taken from the real system (statvfs, /proc, sysfs, nvidia-smi,
tegrastats); the lab's `disk-full` fault overrides the disk reading.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleet_runtime import slots
from fleet_runtime.agent.info import identity
from fleet_runtime.layout import Layout, lab_faults

Check = dict[str, Any]
WARN_PCT, FAIL_PCT = 85.0, 95.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("health", help="disk, memory, load, temperature, GPU, clock, agent")
    p.add_argument("--disk-warn", type=float, default=WARN_PCT)
    p.add_argument("--disk-fail", type=float, default=FAIL_PCT)
    p.add_argument("--mem-warn", type=float, default=WARN_PCT)
    p.add_argument("--mem-fail", type=float, default=FAIL_PCT)
    p.set_defaults(handler=run)


def grade(value: float, warn: float, fail: float) -> str:
    return "fail" if value >= fail else "warn" if value >= warn else "ok"


def check(name: str, status: str, reason: str = "", **values: Any) -> Check:
    return {"name": name, "status": status, "reason": reason, **values}


def disk_check(layout: Layout, warn: float, fail: float) -> Check:
    usage = shutil.disk_usage(layout.root)
    pct = 100.0 * usage.used / usage.total
    if lab_faults(layout).get("disk-full"):
        pct = 100.0
    status = grade(pct, warn, fail)
    reason = "" if status == "ok" else f"disk {pct:.0f}% used (warn {warn:.0f}%, fail {fail:.0f}%)"
    return check("disk", status, reason, used_pct=round(pct, 1), free_bytes=usage.free)


def meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        out[key] = int(rest.split()[0]) * 1024
    return out


def memory_check(warn: float, fail: float) -> Check:
    info = meminfo()
    pct = 100.0 * (1 - info["MemAvailable"] / info["MemTotal"])
    status = grade(pct, warn, fail)
    reason = "" if status == "ok" else f"memory {pct:.0f}% used"
    return check("memory", status, reason, used_pct=round(pct, 1), total_bytes=info["MemTotal"])


def load_check() -> Check:
    load1 = os.getloadavg()[0]
    per_cpu = load1 / (os.cpu_count() or 1)
    status = "warn" if per_cpu > 2.0 else "ok"
    reason = "" if status == "ok" else f"load {load1:.1f} is {per_cpu:.1f} per CPU"
    return check("load", status, reason, load1=round(load1, 2))


def temperature_check() -> Check:
    temps = []
    for zone in Path("/sys/class/thermal").glob("thermal_zone*/temp"):
        try:
            temps.append(int(zone.read_text()) / 1000.0)
        except (OSError, ValueError):
            continue
    if not temps:
        return check("temperature", "ok", "no thermal sensors", celsius=None)
    hottest = max(temps)
    status = grade(hottest, 85.0, 95.0)
    reason = "" if status == "ok" else f"{hottest:.0f} C"
    return check("temperature", status, reason, celsius=hottest)


def gpu_check() -> Check:
    """GPU use and memory from nvidia-smi (dGPU) or tegrastats (Jetson), when present."""
    smi = shutil.which("nvidia-smi")
    if smi:
        return _nvidia_smi(smi)
    if shutil.which("tegrastats"):
        return check("gpu", "ok", "tegrastats present", source="tegrastats")
    return check("gpu", "ok", "no GPU tools on this device", present=False)


def _nvidia_smi(smi: str) -> Check:
    query = "--query-gpu=utilization.gpu,memory.used,memory.total"
    try:
        out = subprocess.run(
            [smi, query, "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        return check("gpu", "warn", f"nvidia-smi failed: {exc}", present=True)
    util, used, total = (float(x) for x in out.splitlines()[0].split(","))
    return check("gpu", "ok", "", present=True, util_pct=util, mem_used_mb=used, mem_total_mb=total)


def clock_check() -> Check:
    # The controller compares `time` with its own clock to compute skew.
    return check("clock", "ok", "", time=time.time())


def agent_check(layout: Layout) -> Check:
    identity(layout)
    return check("agent", "ok", "", slot=slots.active_slot(layout))


def verdict(checks: list[Check]) -> str:
    statuses = {c["status"] for c in checks}
    return "failing" if "fail" in statuses else "degraded" if "warn" in statuses else "healthy"


def run(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    probes: list[Callable[[], Check]] = [
        lambda: agent_check(layout),
        lambda: disk_check(layout, args.disk_warn, args.disk_fail),
        lambda: memory_check(args.mem_warn, args.mem_fail),
        load_check,
        temperature_check,
        gpu_check,
        clock_check,
    ]
    checks = [probe() for probe in probes]
    reasons = [c["reason"] for c in checks if c["status"] != "ok"]
    return {
        "verdict": verdict(checks),
        "reason": "; ".join(reasons),
        "software": slots.software_version(layout),
        "slot": slots.active_slot(layout),
        "checks": checks,
    }
