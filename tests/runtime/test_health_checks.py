"""The agent's health checks beyond the machine: certificate, pending slot, runtime apps."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fleet_runtime.agent import health
from fleet_runtime.layout import Layout, atomic_write_json


def write_cert(layout: Layout, days: float) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev1")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - timedelta(days=400)).not_valid_after(now + timedelta(days=days))
            .sign(key, hashes.SHA256()))
    layout.etc.mkdir(parents=True, exist_ok=True)
    layout.device_crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@pytest.mark.parametrize(("days", "status", "reason"), [
    (365, "ok", ""),
    (10, "warn", "device certificate expires in 10 days"),
    (-3, "fail", "device certificate expired 3 days ago"),
])
def test_certificate_days_to_expiry(tmp_path: Path, days: float, status: str, reason: str) -> None:
    layout = Layout(tmp_path)
    write_cert(layout, days + 0.2 if days > 0 else days - 0.2)
    got = health.certificate_check(layout, warn_days=30)
    assert (got["status"], got["reason"]) == (status, reason)


def test_no_certificate_is_reported_not_failed(tmp_path: Path) -> None:
    assert health.certificate_check(Layout(tmp_path), 30)["present"] is False


def test_pending_slot_is_a_warning(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    versions = {"a": {"version": "1.0.0"}, "b": {"version": "1.1.0"}}
    atomic_write_json(layout.boot_json, {"state": "trial", "active": "b", "committed_slot": "a",
                                         "pending": "b", "trials_left": 2, "slots": versions})
    got = health.slot_check(layout)
    assert got["status"] == "warn"
    assert got["reason"] == "slot b trial, not committed (2 trial boots left)"
    atomic_write_json(layout.boot_json, {"state": "idle", "active": "a", "pending": None})
    assert health.slot_check(layout)["status"] == "ok"


class _Runtime(BaseHTTPRequestHandler):
    doc: dict[str, Any] = {}
    code = 200

    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps(self.doc).encode()
        self.send_response(self.code if self.path == "/health" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def runtime_http() -> Iterator[tuple[int, type[_Runtime]]]:
    """A real HTTP server answering /health with the runtime's document shape."""
    handler = type("Handler", (_Runtime,), {"doc": {}, "code": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], handler
    server.shutdown()
    server.server_close()


def runtime_doc(status: str, fps: float, cameras: dict[str, bool]) -> dict[str, Any]:
    return {"status": status, "ready": True, "fps": fps, "reasons": [],
            "cameras": {n: {"connected": c, "last_error": None if c else "Connection timed out"}
                        for n, c in cameras.items()}}


def test_runtime_apps_fps_and_cameras(tmp_path: Path, runtime_http: tuple[int, Any]) -> None:
    port, handler = runtime_http
    layout = Layout(tmp_path)
    atomic_write_json(layout.run / "runtime.json", {"apps": {"people": {"http_port": port}}})
    handler.doc = runtime_doc("ok", 24.8, {"dock": True, "gate": False})
    checks = {c["name"]: c for c in health.runtime_checks(layout, min_fps=0)}
    assert checks["runtime"]["running"] is True
    assert checks["app:people"]["status"] == "ok" and checks["app:people"]["fps"] == 24.8
    assert checks["cameras:people"]["status"] == "warn"
    assert checks["cameras:people"]["reason"] == "app people: camera gate not streaming"
    slow = {c["name"]: c for c in health.runtime_checks(layout, min_fps=25)}
    assert slow["app:people"]["reason"] == "app people: 24.8 fps (below 25.0)"


def test_failed_runtime_and_silent_runtime(tmp_path: Path, runtime_http: tuple[int, Any]) -> None:
    port, handler = runtime_http
    layout = Layout(tmp_path)
    atomic_write_json(layout.run / "runtime.json", {"http_port": port, "app": "ppe"})
    # what the runtime sends once a node has failed for good (a crash loop: see the real
    # runtime's test below); the document rides on a 503
    handler.doc = {**runtime_doc("failed", 0, {}), "reasons": ["node code: failed (OSError: x)"]}
    handler.code = 503
    app = {c["name"]: c for c in health.runtime_checks(layout, 0)}["app:ppe"]
    assert app["status"] == "fail" and app["reason"] == "app ppe: node code: failed (OSError: x)"
    atomic_write_json(layout.run / "runtime.json", {"http_port": 1, "app": "ppe"})
    silent = {c["name"]: c for c in health.runtime_checks(layout, 0)}["app:ppe"]
    assert silent["status"] == "fail" and "not answering" in silent["reason"]


def test_no_runtime_file_means_no_apps(tmp_path: Path) -> None:
    assert health.runtime_checks(Layout(tmp_path), 0) == [
        {"name": "runtime", "status": "ok", "reason": "", "running": False}]


@pytest.mark.parametrize(("status", "port", "verdict", "reason"), [
    ({"current": None, "state": "staged"}, None, "ok", ""),
    ({"current": "1.0.0", "state": "done"}, None, "warn",
     "app color: runtime not running (1.0.0, done)"),
    ({"current": "1.0.0", "state": "rolled-back", "reason": "low fps on door"}, None, "warn",
     "app color: runtime not running (1.0.0, rolled-back)"),
])
def test_a_deployed_app_without_its_runtime(status: dict[str, Any], port: int | None,
                                            verdict: str, reason: str) -> None:
    [check] = health.deployed_app("color", status, port, 0.0)
    assert (check["status"], check["reason"]) == (verdict, reason)
    assert (check["version"], check["state"]) == (status["current"], status["state"])


def test_a_rolled_back_app_that_runs_is_a_warning_with_the_reason(
        tmp_path: Path, runtime_http: tuple[int, Any]) -> None:
    port, handler = runtime_http
    handler.doc = runtime_doc("ok", 15.0, {"door": True})
    app, _cameras = health.deployed_app(
        "color", {"current": "1.0.0", "state": "rolled-back", "committed": "1.0.0",
                  "reason": "camera door: 0.0 fps (minimum 5)"}, port, 0.0)
    assert app["status"] == "warn" and app["version"] == "1.0.0"
    assert app["reason"] == "app color: rolled-back: camera door: 0.0 fps (minimum 5)"


# tegrastats lines as Jetson boards print them (Orin on JetPack 6, Nano on JetPack 4)
ORIN = (
    "11-22-2026 05:40:01 RAM 2872/7620MB (lfb 1x4MB) SWAP 0/3810MB (cached 0MB)"
    " CPU [2%@729,1%@729,0%@729,0%@729,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 37%@[305]"
    " NVDEC off NVJPG off VIC_FREQ 729 APE 174 CV0@-256C CPU@46.5C SOC2@44.968C"
    " GPU@44.875C tj@46.5C VDD_IN 4525mW/4525mW VDD_CPU_GPU_CV 482mW/482mW"
)
NANO = (
    "RAM 1772/3956MB (lfb 61x4MB) SWAP 0/1978MB (cached 0MB) IRAM 0/252kB(lfb 252kB)"
    " CPU [7%@1479,3%@1479,2%@1479,5%@1479] EMC_FREQ 3%@1600 GR3D_FREQ 0%@76 APE 25"
    " PLL@32C CPU@34C PMIC@100C GPU@-256C AO@40C thermal@33.75C POM_5V_IN 2249/2249"
)


@pytest.mark.parametrize(("line", "expected"), [
    (ORIN, {"mem_used_mb": 2872, "mem_total_mb": 7620, "util_pct": 37, "celsius": 44.875}),
    (NANO, {"mem_used_mb": 1772, "mem_total_mb": 3956, "util_pct": 0}),  # GPU sensor off
    ("tegrastats: permission denied", {}),
])
def test_parse_tegrastats(line: str, expected: dict[str, float]) -> None:
    assert health.parse_tegrastats(line) == expected


def fake_tool(folder: Path, name: str, script: str) -> None:
    """A stand-in for a Jetson-only tool (the real one needs Jetson hardware)."""
    folder.mkdir(exist_ok=True)
    tool = folder / name
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(0o755)


@pytest.mark.parametrize(("script", "status", "reason"), [
    (f"echo '{ORIN}'\nexec sleep 30\n", "ok", ""),  # streams until stopped: one line is read
    ("exec sleep 30\n", "warn", "tegrastats: no output in 3s"),
    ("echo 'usage: tegrastats [--interval ms]'\n", "warn", "tegrastats: unrecognised output in 3s"),
])
def test_gpu_check_reads_one_tegrastats_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str, status: str, reason: str
) -> None:
    fake_tool(tmp_path / "bin", "tegrastats", script)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    monkeypatch.setattr(health.shutil, "which", lambda name: (
        str(tmp_path / "bin" / name) if (tmp_path / "bin" / name).exists() else None))
    result = health.gpu_check()
    assert (result["status"], result["reason"], result["present"]) == (status, reason, True)
    if status == "ok":
        assert (result["util_pct"], result["mem_total_mb"], result["source"]) == (37, 7620, "tegrastats")


CRASHING_CODE = """
import panoramasdk

class Application(panoramasdk.node):
    def process_streams(self):
        self.inputs.video_in.get()
        raise RuntimeError("bad frame handling")

app = Application()
while True:
    app.process_streams()
"""
COLOR_CODE = "packages/123456789012-COLOR_CODE-1.0/src/application.py"


def _runtime_health(layout: Layout) -> dict[str, Any] | None:
    ports = health.runtime_ports(layout)
    try:
        return health.fetch_health(ports["color_classifier"]) if ports else None
    except OSError:
        return None  # registered, not answering yet


def test_a_crash_loop_in_the_real_runtime_shows_in_the_agents_health(
        color_app: Path, tmp_path: Path) -> None:
    """fleet-runtime runs an app whose code node raises on every frame; the agent's health,
    reading that runtime's own /health, names the crash loop and degrades the device."""
    import os
    import shutil
    import subprocess
    import sys
    import time

    app = tmp_path / "crashy"
    shutil.copytree(color_app, app)
    (app / COLOR_CODE).write_text(CRASHING_CODE)
    layout = Layout(tmp_path / "device")
    atomic_write_json(layout.device_json, {"name": "lab-01"})
    env = {**os.environ, "FLEET_ROOT": str(layout.root)}
    runtime = subprocess.Popen(
        [sys.executable, "-m", "fleet_runtime.runtime_cli", "run", str(app), "--camera",
         "camera_node=synthetic:32x24@30", "--providers", "cpu", "--http", "0",
         "--duration", "600"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while "crash_loop" not in json.dumps(_runtime_health(layout) or {}):
            assert runtime.poll() is None and time.monotonic() < deadline, "no crash loop seen"
            time.sleep(0.1)
        agent = Path(sys.executable).parent / "fleet-agent"
        calm = ["--disk-warn", "100", "--disk-fail", "100", "--mem-warn", "100",
                "--mem-fail", "100", "--load-warn", "1000"]  # the host must not decide it
        proc = subprocess.run([str(agent), "health", *calm], env=env, capture_output=True,
                              text=True, timeout=60)
    finally:
        runtime.terminate()
        runtime.wait(timeout=60)
    report = json.loads(proc.stdout)
    app_check = {c["name"]: c for c in report["checks"]}["app:color_classifier"]
    assert (app_check["status"], app_check["runtime_status"]) == ("warn", "degraded")
    assert app_check["reason"].startswith("app color_classifier: node code_node: crash_loop")
    assert report["verdict"] == "degraded" and report["reason"] == app_check["reason"]


def test_certificate_facts_follow_the_certificate_not_the_cache(tmp_path: Path) -> None:
    """The parsed facts are kept in run/ (#19: no x509 import per call) beside the
    certificate's own text: a renewed certificate is read afresh, and a torn or edited
    cache is only a miss."""
    layout = Layout(tmp_path)
    write_cert(layout, 365.2)
    first = health.certificate_check(layout, warn_days=30)
    cache = layout.run / health.CERT_FACTS
    assert cache.exists() and first["status"] == "ok"
    assert health.certificate_check(layout, warn_days=30) == first  # from the cache
    write_cert(layout, 10.2)  # renewed (here: worse)
    renewed = health.certificate_check(layout, warn_days=30)
    assert (renewed["status"], renewed["reason"]) == ("warn", "device certificate expires in 10 days")
    for junk in ("{not json", json.dumps({"pem": "x"}), "[]"):
        cache.write_text(junk)
        assert health.certificate_check(layout, warn_days=30)["days_left"] == renewed["days_left"]
    kept = json.loads(cache.read_text())
    kept["not_after"] = 0  # a cache that lies about another certificate's bytes...
    kept["pem"] = kept["pem"].replace("A", "B", 1)
    cache.write_text(json.dumps(kept))
    assert health.certificate_check(layout, warn_days=30)["status"] == "warn"  # ...is ignored
