"""`fleet-runtime` commands as a person types them: validate, providers, bench, run errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")


def fleet_runtime(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet_runtime.runtime_cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_validate_ok_and_broken(color_app: Path, tmp_path: Path):
    ok = fleet_runtime("validate", str(color_app))
    assert ok.returncode == 0 and ok.stdout == "" and "valid" in ok.stderr
    override = tmp_path / "override.json"
    override.write_text(
        json.dumps({"nodeGraphOverrides": {"envelopeVersion": "2021", "nodeOverrides": []}})
    )
    bad = fleet_runtime("validate", str(color_app), "--override", str(override), "--json")
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["problems"] == [
        {
            "file": str(override),
            "path": "$.nodeGraphOverrides.envelopeVersion",
            "message": "'2021-01-01' was expected",
        }
    ]


def test_providers_reports_what_loads():
    result = fleet_runtime("providers", "--json")
    assert result.returncode == 0
    doc = json.loads(result.stdout)
    assert "CPUExecutionProvider" in doc["available"]
    assert doc["loads"]["CPUExecutionProvider"] is True
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert doc["loads"]["CUDAExecutionProvider"] is False


def test_bench_model_and_app(color_app: Path):
    model = color_app / "packages/123456789012-COLOR_MODEL-1.0/model/color.onnx"
    raw = fleet_runtime("bench", str(model), "--frames", "20", "--json", "--providers", "cuda,cpu")
    assert raw.returncode == 0, raw.stderr
    doc = json.loads(raw.stdout)
    assert doc["frames"] == 20 and doc["fps"] > 0 and doc["provider"] == "CPUExecutionProvider"
    app = fleet_runtime("bench", str(color_app), "--frames", "10", "--json")
    assert app.returncode == 0, app.stderr
    doc = json.loads(app.stdout)
    assert doc["frames"] == 10 and doc["frames_dropped"] == {"camera_node": 0} and doc["fps"] > 0


def test_run_refuses_unbound_camera_in_one_line(color_app: Path, tmp_path: Path):
    env_root = tmp_path / "root"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fleet_runtime.runtime_cli",
            "--log-level",
            "ERROR",
            "run",
            str(color_app),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"FLEET_ROOT": str(env_root), "PATH": "/usr/bin"},
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "fleet-runtime: camera camera_node (node camera_node) is not bound: "
        "pass --camera camera_node=URI or add it to cameras.json"
    )


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("run", "{app}", "--threads", "0"), "argument --threads: 0 is below 1"),
        (("run", "{app}", "--threads", "two"), "argument --threads: 'two' is not a whole number"),
        (("run", "{app}", "--duration", "-5"), "argument --duration: -5 must be above 0"),
        (("run", "{app}", "--http", "70000"), "argument --http: 70000 is above 65535"),
        (("run", "{app}", "--max-cameras", "0"), "argument --max-cameras: 0 is below 1"),
        (("bench", "{app}", "--frames", "0"), "argument --frames: 0 is below 1"),
    ],
)
def test_out_of_range_numbers_are_refused_before_anything_runs(
    color_app: Path, args: tuple[str, ...], error: str
):
    result = fleet_runtime(*(a.format(app=color_app) for a in args))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines()[-1].endswith(error)



@pytest.mark.parametrize("args", [("validate",), ("run",), ("models", "fetch"), ("bench",)])
def test_a_path_typo_is_bad_input(tmp_path: Path, args: tuple[str, ...]):
    # Exit 2 like `fleet` for a file that does not exist, not 1 (a failed operation).
    result = fleet_runtime(*args, str(tmp_path / "face_blr"))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines()[-1].endswith("face_blr does not exist; check the path")


@pytest.mark.parametrize("content", [b"", b"\x08\x07garbage" * 50, b"not a model at all\n"])
def test_a_corrupt_model_is_one_line_not_a_traceback(tmp_path: Path, content: bytes):
    model = tmp_path / "detector.onnx"
    model.write_bytes(content)
    result = fleet_runtime("bench", str(model), "--frames", "2")
    assert result.returncode == 1 and result.stdout == ""
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"fleet-runtime: {model}: not a loadable ONNX model (")
    assert last.endswith("check the file or fetch it again")


def test_version_is_the_agents():
    # Both come from the one edgefleet-runtime package; a user checks either.
    ours = fleet_runtime("--version")
    agent = subprocess.run([sys.executable, "-m", "fleet_runtime.agent.cli", "--version"],
                           capture_output=True, text=True, timeout=120, check=False)
    assert ours.returncode == 0 and agent.returncode == 0, ours.stderr + agent.stderr
    assert ours.stdout.startswith("fleet-runtime ")
    assert ours.stdout.split(" ", 1)[1] == agent.stdout.split(" ", 1)[1]

def test_run_with_duration_and_synthetic_camera(color_app: Path, tmp_path: Path):
    cameras = tmp_path / "cameras.json"
    cameras.write_text(
        json.dumps({"cameras": [{"name": "camera_node", "url": "synthetic:64x48@30"}]})
    )
    result = fleet_runtime("run", str(color_app), "--cameras", str(cameras), "--duration", "1.5")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["nodes"] == {"code_node": "running"} and summary["frames_out"]["camera_node"] > 5


def test_run_registers_its_port_for_the_agent(color_app: Path, tmp_path: Path):
    """On a device root, run/fleet/runtime.json names the port (fleet-agent health reads it)."""
    import os
    import time
    import urllib.request

    root = tmp_path / "device"
    (root / "etc/fleet").mkdir(parents=True)
    (root / "etc/fleet/device.json").write_text('{"name": "lab-01"}')
    env = {**os.environ, "FLEET_ROOT": str(root)}
    argv = [
        sys.executable,
        "-m",
        "fleet_runtime.runtime_cli",
        "run",
        str(color_app),
        "--camera",
        "camera_node=synthetic:64x48@15",
        "--http",
        "0",
        "--duration",
        "600",  # stopped by SIGTERM below, once seen running: a slow start cannot beat it
    ]
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    registry = root / "run/fleet/runtime.json"

    def code_node_state() -> str | None:
        apps = json.loads(registry.read_text() if registry.exists() else "{}").get("apps")
        if not apps:
            return None
        url = f"http://127.0.0.1:{apps['color_classifier']['http_port']}/health"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return str(json.loads(response.read())["nodes"]["code_node"]["state"])
        except OSError:
            return None  # registered, not serving yet

    try:
        deadline = time.monotonic() + 120
        while code_node_state() != "running":
            assert proc.poll() is None and time.monotonic() < deadline, "never seen running"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert json.loads(registry.read_text()) == {"apps": {}}


def test_panoramasdk_outside_the_runtime_says_how_to_run():
    code = (
        "from fleet_runtime import panoramasdk; panoramasdk.install();"
        " import panoramasdk as p; p.node()"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "run the app with `fleet-runtime run APP`" in result.stderr
