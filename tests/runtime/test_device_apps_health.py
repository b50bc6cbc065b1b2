"""The video-aware health gate on a real runtime: good versions commit, bad ones roll back.

Real parts: the colour classifier example with the ONNX model the tests build,
``fleet-runtime run`` started by ``fleet-agent app run`` (the lab supervisor),
the project's RTSP test server as the camera. Windows are short (2 s) here;
the default is 30 s.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")

from device_apps import AGENT, agent, app_status, send_app, wait_for  # noqa: E402
from fleet_runtime.apps import supervise  # noqa: E402
from fleet_runtime.layout import Layout  # noqa: E402

CODE = "packages/123456789012-COLOR_CODE-1.0/src/application.py"
HEALTH = {"window_s": 2, "startup_s": 90, "min_fps": 1, "poll_s": 0.5}


def crashing(app: Path, dest: Path) -> Path:
    """The same app whose code raises on every frame (a bug that ships)."""
    broken = dest / "crashing"
    shutil.copytree(app, broken)
    code = broken / CODE
    code.write_text(code.read_text().replace(
        "        streams = self.inputs.video_in.get()\n",
        "        raise RuntimeError('release 2 broke process_streams')\n"))
    return broken


@pytest.fixture
def device(tmp_path: Path) -> Path:
    root = tmp_path / "dev"
    (root / "etc/fleet").mkdir(parents=True)
    return root


def start_supervisor(root: Path, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*AGENT, "app", "run", name],
                            env={**os.environ, "FLEET_ROOT": str(root)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)


def runtime_at(root: Path, name: str, version: str) -> bool:
    record = supervise.read_record(Layout(root), name) or {}
    return record.get("version") == version and supervise.alive(record.get("child"))


def deploy_first(root: Path, color_app: Path, tmp_path: Path, camera: str) -> None:
    manifest = send_app(root, color_app, "color", "1.0.0", tmp_path,
                        cameras={"camera_node": camera}, health=HEALTH)
    code, doc = agent(root, "app", "stage", str(manifest))
    assert code == 0 and doc["app"]["state"] == "staged", doc


def test_good_then_crashing_version_rolls_back_with_the_reason(
        device, tmp_path, color_app, rtsp_server):
    deploy_first(device, color_app, tmp_path, rtsp_server.url())
    sup = start_supervisor(device, "color")
    try:
        code, doc = agent(device, "app", "activate", "color")
        assert code == 0, doc
        assert doc["app"]["state"] == "done" and doc["app"]["committed"] == "1.0.0"
        assert doc["app"]["gate"]["fps"]["camera_node"] >= 1
        killed = (supervise.read_record(Layout(device), "color") or {})["child"]
        os.kill(killed, signal.SIGKILL)  # the runtime dies: the supervisor starts another
        wait_for("a restarted runtime", lambda: (
            r := supervise.read_record(Layout(device), "color") or {}).get("child") not in
            (None, killed) and r["restarts"] >= 1)
        bad = crashing(color_app, tmp_path)
        manifest = send_app(device, bad, "color", "2.0.0", tmp_path,
                            cameras={"camera_node": rtsp_server.url()}, health=HEALTH)
        code, doc = agent(device, "app", "stage", str(manifest))
        assert code == 0, doc
        code, doc = agent(device, "app", "activate", "color")
        assert code == 1 and doc["error"]["code"] == "rolled-back", doc
        assert "crash" in doc["error"]["message"], doc
        status = app_status(device, "color")
        assert status["state"] == "rolled-back" and status["current"] == "1.0.0"
        assert status["committed"] == "1.0.0" and "code_node" in status["reason"]
        wait_for("the runtime back on 1.0.0", lambda: runtime_at(device, "color", "1.0.0"))
    finally:
        stop(sup)


def test_zero_fps_version_is_rolled_back_by_the_device_alone(
        device, tmp_path, color_app, rtsp_server):
    deploy_first(device, color_app, tmp_path, rtsp_server.url())
    sup = start_supervisor(device, "color")
    try:
        code, doc = agent(device, "app", "activate", "color")
        assert code == 0, doc
        # 2.0.0 binds its camera to a mount that serves no frames: the runtime runs at 0 fps.
        manifest = send_app(device, color_app, "color", "2.0.0", tmp_path,
                            cameras={"camera_node": rtsp_server.url("no-such-mount")},
                            health={**HEALTH, "startup_s": 20})
        assert agent(device, "app", "stage", str(manifest))[0] == 0
        code, doc = agent(device, "app", "activate", "color", "--no-wait")
        assert code == 0 and doc["app"]["state"] == "checking", doc
        # nobody commits: the supervisor runs the gate and rolls back on its own
        status = wait_for("the device's own verdict", lambda: (
            s := app_status(device, "color"))["state"] in ("done", "rolled-back") and s)
        assert status["state"] == "rolled-back", status
        assert status["current"] == "1.0.0" and "fps" in status["reason"], status
        wait_for("the runtime back on 1.0.0", lambda: runtime_at(device, "color", "1.0.0"))
    finally:
        stop(sup)
