"""`fleet-agent health`: checks, each ``{"name", "status": ok|warn|fail, "reason", ...}``.

Readings are taken from the real system (statvfs, /proc, sysfs, nvidia-smi,
tegrastats); the lab's `disk-full` fault overrides the disk reading. Beyond the
machine: the device certificate's days to expiry, an uncommitted (pending)
slot, and, when the runtime runs, each application's status, fps and camera
streams from its ``/health`` (ports in ``run/fleet/runtime.json``:
``{"http_port": N, "app": NAME}`` or ``{"apps": {NAME: {"http_port": N}}}``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleet_runtime import labhooks, slot_state
from fleet_runtime.agent.info import identity
from fleet_runtime.layout import Layout, read_json

Check = dict[str, Any]
WARN_PCT, FAIL_PCT = 85.0, 95.0
CERT_WARN_DAYS = 30.0
RUNTIME_TIMEOUT_S = 2.0
LOAD_WARN_PER_CPU = 2.0


# The thresholds (flag, default, help): `health` takes them, and so does `commit` for its gate.
THRESHOLDS: tuple[tuple[str, float, str | None], ...] = (
    ("--disk-warn", WARN_PCT, None), ("--disk-fail", FAIL_PCT, None),
    ("--mem-warn", WARN_PCT, None), ("--mem-fail", FAIL_PCT, None),
    ("--cert-warn-days", CERT_WARN_DAYS, None),
    ("--min-fps", 0.0, "warn when an app runs slower"),
    ("--load-warn", LOAD_WARN_PER_CPU, "warn when the 1-minute load per CPU exceeds this"),
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("health", help="disk, memory, load, temperature, GPU, clock, agent")
    add_thresholds(p, with_defaults=True)
    p.add_argument("--slots", action="store_true",
                   help="add the slot state (as `slots` answers it) under \"slots\": what an "
                   "update's verify step needs, in one call")
    p.set_defaults(handler=run)


def add_thresholds(p: argparse.ArgumentParser, with_defaults: bool) -> None:
    for flag, default, text in THRESHOLDS:
        p.add_argument(flag, type=float, default=default if with_defaults else None, help=text)


def given_thresholds(args: argparse.Namespace) -> list[str]:
    """The threshold flags given on the command line (added without defaults), as argv."""
    out = []
    for flag, _default, _text in THRESHOLDS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            out += [flag, str(value)]
    return out


def grade(value: float, warn: float, fail: float) -> str:
    return "fail" if value >= fail else "warn" if value >= warn else "ok"


def check(name: str, status: str, reason: str = "", **values: Any) -> Check:
    return {"name": name, "status": status, "reason": reason, **values}


def disk_check(layout: Layout, warn: float, fail: float) -> Check:
    usage = shutil.disk_usage(layout.root)
    pct = 100.0 * usage.used / usage.total
    if labhooks.disk_full(layout):
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


def load_check(layout: Layout, warn_per_cpu: float = LOAD_WARN_PER_CPU) -> Check:
    load1 = os.getloadavg()[0]
    per_cpu = load1 / (os.cpu_count() or 1)
    if labhooks.shares_host(layout):
        # Lab devices share one host's CPUs: its load is not theirs to be judged by.
        return check("load", "ok", "", load1=round(load1, 2), shared_host=True)
    status = "warn" if per_cpu > warn_per_cpu else "ok"
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
    tegrastats = shutil.which("tegrastats")
    if tegrastats:
        return _tegrastats(tegrastats)
    return check("gpu", "ok", "no GPU tools on this device", present=False)


# One tegrastats line (Nano/TX2 through Orin):
#   RAM 2872/7620MB (lfb 1x4MB) SWAP 0/3810MB ... GR3D_FREQ 12%@[305,305] ... GPU@44.875C ...
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%")
_GPU_TEMP = re.compile(r"\bGPU@(-?[\d.]+)C")


def parse_tegrastats(line: str) -> dict[str, float]:
    """GPU use (GR3D), shared RAM and GPU temperature from one tegrastats line."""
    values: dict[str, float] = {}
    if ram := _RAM.search(line):
        values["mem_used_mb"], values["mem_total_mb"] = float(ram[1]), float(ram[2])
    if gr3d := _GR3D.search(line):
        values["util_pct"] = float(gr3d[1])
    if (temp := _GPU_TEMP.search(line)) and float(temp[1]) > -200:  # -256C: sensor off
        values["celsius"] = float(temp[1])
    return values


def _tegrastats(tegrastats: str, timeout: float = 3.0) -> Check:
    """Read one line of tegrastats (it streams until stopped), then stop it."""
    import signal
    import subprocess  # here, as in _nvidia_smi: only a device with GPU tools needs them

    try:
        proc = subprocess.Popen(
            [tegrastats, "--interval", "200"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own group: stopping it stops any helper it started
        )
    except OSError as exc:
        return check("gpu", "warn", f"tegrastats failed: {exc}", present=True)
    try:
        line = _first_line(proc.stdout.fileno() if proc.stdout else -1, timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
    values = parse_tegrastats(line)
    if "util_pct" not in values:
        why = "no output" if not line.strip() else "unrecognised output"
        return check("gpu", "warn", f"tegrastats: {why} in {timeout:g}s", present=True)
    return check("gpu", "ok", "", present=True, source="tegrastats", **values)


def _first_line(fd: int, timeout: float) -> str:
    """The first line written to ``fd`` within ``timeout`` seconds ("" if none)."""
    import select

    deadline, data = time.monotonic() + timeout, b""
    while fd >= 0 and b"\n" not in data and len(data) < 65536:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode("utf-8", "replace")


def _nvidia_smi(smi: str) -> Check:
    import subprocess

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
    return check("agent", "ok", "", slot=slot_state.active_slot(layout))


def certificate_check(layout: Layout, warn_days: float) -> Check:
    """Days until the device certificate expires (fail once expired)."""
    try:
        pem = layout.device_crt.read_bytes()
    except FileNotFoundError:
        return check("certificate", "ok", "", present=False)
    facts = certificate_facts(layout, pem)
    if facts is None:
        return check("certificate", "fail", f"unreadable device certificate {layout.device_crt}")
    days = (facts["not_after"] - time.time()) / 86400
    # Serial and issuer let the controller look the certificate up in the fleet CRL:
    # the device cannot know it was revoked.
    ident = {"days_left": round(days, 1), "serial": facts["serial"], "issuer": facts["issuer"]}
    if days <= 0:
        return check("certificate", "fail", f"device certificate expired {-days:.0f} days ago",
                     **ident)
    status = "warn" if days < warn_days else "ok"
    reason = f"device certificate expires in {days:.0f} days" if status == "warn" else ""
    return check("certificate", status, reason, **ident)


CERT_FACTS = "device-cert.json"  # under run/ (tmpfs on a device): gone with every boot


def certificate_facts(layout: Layout, pem: bytes) -> dict[str, Any] | None:
    """Expiry, serial and issuer of the certificate `pem` (None when it is unreadable).

    Parsing needs cryptography's x509, whose import costs more than the rest of a
    health call on a small core (#19), while the certificate changes only at
    provisioning and renewal. So the facts are kept in run/ beside the certificate's
    own text (public, ~1 KB; comparing it needs no hashlib, whose OpenSSL load is a
    tenth of a health call): any other certificate is parsed afresh."""
    text = pem.decode("ascii", "replace")
    cache = layout.run / CERT_FACTS
    kept = _kept_facts(cache, text)
    if kept is not None:
        return kept
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    facts = {"pem": text, "not_after": cert.not_valid_after_utc.timestamp(),
             "serial": format(cert.serial_number, "x"), "issuer": cert.issuer.rfc4514_string()}
    with contextlib.suppress(OSError):  # a read-only run/ only costs the next call a parse
        from fleet_runtime.durable import atomic_write_text

        cache.parent.mkdir(parents=True, exist_ok=True)
        # a cache: whole or absent, but not worth an fsync on every health call
        atomic_write_text(cache, json.dumps(facts), sync=False, sync_dir=False)
    return facts


def _kept_facts(cache: Path, pem: str) -> dict[str, Any] | None:
    """The cached facts when they are for this certificate and well formed; else None
    (a torn or hand-edited cache is only a miss, never a failed check)."""
    try:
        kept = json.loads(cache.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(kept, dict) or kept.get("pem") != pem:
        return None
    shapes = (("not_after", (int, float)), ("serial", str), ("issuer", str))
    return kept if all(isinstance(kept.get(k), t) for k, t in shapes) else None


def slot_check(layout: Layout) -> Check:
    """A new slot activated or on trial and not yet committed is worth a look."""
    state = slot_state.read_state(layout)
    pending, phase = state.get("pending"), state.get("state", "idle")
    if pending and phase in ("activated", "trial"):
        return check("slot", "warn", f"slot {pending} {phase}, not committed "
                     f"({state.get('trials_left', 0)} trial boots left)", pending=pending,
                     state=phase)
    return check("slot", "ok", "", pending=None, state=phase)


def runtime_ports(layout: Layout) -> dict[str, int]:
    """Application name -> local HTTP port of its runtime, from run/fleet/runtime.json."""
    doc = read_json(layout.run / "runtime.json", default=None) or {}
    if "apps" in doc:
        return {str(n): int(a["http_port"]) for n, a in doc["apps"].items() if a.get("http_port")}
    if doc.get("http_port"):
        return {str(doc.get("app", "runtime")): int(doc["http_port"])}
    return {}


def fetch_health(port: int) -> dict[str, Any]:
    import urllib.error  # only when an application runs: a sweep of idle devices skips it
    import urllib.request

    url = f"http://127.0.0.1:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=RUNTIME_TIMEOUT_S) as resp:  # noqa: S310
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:  # 503 still carries the document
        return dict(json.loads(exc.read() or b"{}"))


APP_STATUS = {"ok": "ok", "degraded": "warn", "starting": "warn", "failed": "fail"}


def app_checks(name: str, port: int, min_fps: float) -> list[Check]:
    """One check for the application, one for its camera streams."""
    try:
        doc = fetch_health(port)
    except (OSError, ValueError) as exc:
        return [check(f"app:{name}", "fail",
                      f"app {name}: runtime not answering on :{port} ({exc})")]
    status = APP_STATUS.get(str(doc.get("status")), "warn")
    fps = float(doc.get("fps") or 0.0)
    reasons = [f"app {name}: {r}" for r in doc.get("reasons") or []]
    if status == "ok" and min_fps and fps < min_fps:
        status, reasons = "warn", [f"app {name}: {fps:.1f} fps (below {min_fps:.1f})"]
    elif status != "ok" and not reasons:
        reasons = [f"app {name}: {doc.get('status')}"]
    app = check(f"app:{name}", status, "; ".join(reasons) if status != "ok" else "",
                app=name, runtime_status=doc.get("status"), fps=round(fps, 2))
    return [app, camera_check(name, doc.get("cameras") or {})]


def camera_check(app: str, cameras: dict[str, Any]) -> Check:
    down = sorted(n for n, c in cameras.items() if not c.get("connected"))
    streams = {n: {"connected": bool(c.get("connected")), "error": c.get("last_error")}
               for n, c in cameras.items()}
    if not down:
        return check(f"cameras:{app}", "ok", "", streams=streams)
    return check(f"cameras:{app}", "warn", f"app {app}: camera {', '.join(down)} not streaming",
                 streams=streams)


def runtime_checks(layout: Layout, min_fps: float) -> list[Check]:
    deployed = deployed_checks(layout, min_fps)
    names = {c["app"] for c in deployed if c["name"].startswith("app:")}
    ports = {n: p for n, p in runtime_ports(layout).items() if n not in names}
    if not ports:
        return [check("runtime", "ok", "", running=bool(deployed)), *deployed]
    out = [check("runtime", "ok", "", running=True, apps=sorted(ports))]
    for name, port in sorted(ports.items()):
        out.extend(app_checks(name, port, min_fps))
    return out + deployed


def deployed_checks(layout: Layout, min_fps: float) -> list[Check]:
    """Each application deployed with `fleet-agent app`: its version and flow state, and
    from its supervised runtime's /health its fps and cameras, in this same call."""
    names = layout.app_names()
    if not names:  # nothing deployed: skip flow's imports (urllib, http, email), a third
        return []  # of a health call's start-up on a small core (#19)
    from fleet_runtime.apps import flow, supervise
    from fleet_runtime.layout import StateFileError

    out: list[Check] = []
    for name in names:
        try:
            status = flow.status(layout, name)
        except (OSError, StateFileError, KeyError, ValueError):
            out.append(check(f"app:{name}", "warn", f"app {name}: unreadable state", app=name))
            continue
        record = supervise.read_record(layout, name) or {}
        port = record.get("port") if supervise.alive(record.get("child")) else None
        out.extend(deployed_app(name, status, port if isinstance(port, int) else None, min_fps))
    return out


def deployed_app(name: str, status: dict[str, Any], port: int | None,
                 min_fps: float) -> list[Check]:
    facts = {"app": name, "version": status.get("current"), "state": status.get("state"),
             "committed": status.get("committed")}
    if port is not None:
        checks = app_checks(name, port, min_fps)
        checks[0].update(facts)
    elif facts["version"] is None:
        checks = [check(f"app:{name}", "ok", "", running=False, fps=0.0, **facts)]
    else:
        checks = [check(f"app:{name}", "warn", f"app {name}: runtime not running "
                        f"({facts['version']}, {facts['state']})", running=False, fps=0.0,
                        **facts)]
    if facts["state"] in ("rolled-back", "failed") and checks[0]["status"] == "ok":
        checks[0].update(status="warn", reason=f"app {name}: {facts['state']}: "
                                               f"{status.get('reason') or 'no reason recorded'}")
    return checks


def verdict(checks: list[Check]) -> str:
    statuses = {c["status"] for c in checks}
    return "failing" if "fail" in statuses else "degraded" if "warn" in statuses else "healthy"


def run(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    probes: list[Callable[[], Check]] = [
        lambda: agent_check(layout),
        lambda: disk_check(layout, args.disk_warn, args.disk_fail),
        lambda: memory_check(args.mem_warn, args.mem_fail),
        lambda: load_check(layout, args.load_warn),
        temperature_check,
        gpu_check,
        clock_check,
        lambda: certificate_check(layout, args.cert_warn_days),
        lambda: slot_check(layout),
    ]
    checks = [probe() for probe in probes] + runtime_checks(layout, args.min_fps)
    reasons = [c["reason"] for c in checks if c["status"] != "ok"]
    out: dict[str, Any] = {
        "verdict": verdict(checks),
        "reason": "; ".join(reasons),
        "software": slot_state.software_version(layout),
        "slot": slot_state.active_slot(layout),
        "checks": checks,
    }
    if getattr(args, "slots", False):
        out["slots"] = slot_state.summary(layout)
    return out
