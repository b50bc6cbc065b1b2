"""fleet-agent speaks the protocol: one JSON object on stdout, exit 0/1/2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fleet_runtime import slots
from fleet_runtime.layout import Layout, atomic_write_json

AGENT = str(Path(sys.executable).parent / "fleet-agent")


def call(root: Path, *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    proc = subprocess.run([AGENT, *args], capture_output=True, text=True,
                          env={"FLEET_ROOT": str(root), "PATH": "/usr/bin:/bin"})
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout  # exactly one JSON object
    return proc.returncode, json.loads(lines[0])


@pytest.fixture
def device(tmp_path: Path) -> Path:
    lay = Layout(tmp_path)
    atomic_write_json(lay.device_json, {"name": "dev-1", "serial": "S1", "site": "x",
                                        "hardware": "jetson-orin-nano", "arch": "aarch64"})
    slots.factory_reset_state(lay, "2.3.4")
    return tmp_path


def test_info(device: Path) -> None:
    code, out = call(device, "info")
    assert code == 0 and out["ok"] and out["protocol"] == 1
    assert (out["name"], out["software"], out["slot"], out["arch"]) == ("dev-1", "2.3.4", "a", "aarch64")
    assert out["uptime_s"] >= 0 and out["agent_version"]


# Thresholds the shared test host cannot reach: the verdict is then the device's own.
CALM = ("--disk-warn", "100", "--disk-fail", "100", "--mem-warn", "100", "--mem-fail", "100",
        "--load-warn", "1000")


def test_health_checks_have_status_and_reason(device: Path) -> None:
    code, out = call(device, "health", *CALM)
    assert code == 0 and out["verdict"] == "healthy" and out["reason"] == "", out
    assert {c["name"] for c in out["checks"]} >= {"agent", "disk", "memory", "load", "slot"}
    for check in out["checks"]:
        assert check["status"] == "ok" and "reason" in check, check


def test_a_pending_slot_degrades_health_with_its_reason(device: Path) -> None:
    state = slots.read_state(Layout(device))
    state.update(state="trial", active="b", pending="b", trials_left=2,
                 slots={"a": state["slots"]["a"], "b": {"version": "2.4.0", "status": "trial"}})
    atomic_write_json(Layout(device).boot_json, state)
    code, out = call(device, "health", *CALM)
    assert code == 0 and out["verdict"] == "degraded"
    assert out["reason"] == "slot b trial, not committed (2 trial boots left)"


def test_disk_full_fault_fails_the_disk_check(device: Path) -> None:
    atomic_write_json(Layout(device).lab_faults, {"disk-full": True})
    _, out = call(device, "health")
    disk = next(c for c in out["checks"] if c["name"] == "disk")
    assert disk["status"] == "fail" and "100%" in disk["reason"] and out["verdict"] == "failing"


def test_unprovisioned_device_is_an_error_object(tmp_path: Path) -> None:
    code, out = call(tmp_path, "info")
    assert code == 1 and not out["ok"] and out["error"]["code"] == "not-provisioned"


def test_usage_error_exits_2_with_json(device: Path) -> None:
    code, out = call(device, "no-such-command")
    assert code == 2 and out["error"]["code"] == "usage"


def test_load_is_judged_on_real_devices_not_on_shared_lab_hosts(device: Path) -> None:
    _, out = call(device, "health", "--load-warn", "0")  # any load exceeds 0
    load = next(c for c in out["checks"] if c["name"] == "load")
    if load["load1"] > 0:
        assert load["status"] == "warn" and "per CPU" in load["reason"]
    (device / ".lab").mkdir()
    _, out = call(device, "health", "--load-warn", "0")
    load = next(c for c in out["checks"] if c["name"] == "load")
    assert load["status"] == "ok" and load["shared_host"] is True
