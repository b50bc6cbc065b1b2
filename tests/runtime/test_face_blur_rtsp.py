"""End to end: `fleet-runtime run` blurs faces on a real RTSP stream (gst-rtsp-server) and serves
MJPEG, Prometheus /metrics and /health; CUDA is asked for, the CPU fallback said everywhere."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
cv2 = pytest.importorskip("cv2")
parser = pytest.importorskip("prometheus_client.parser")

from fleet_runtime.pipeline.frames import FrameQueue  # noqa: E402
from fleet_runtime.pipeline.inference import gpu_present  # noqa: E402
from fleet_runtime.pipeline.sources import Source, SourceSpec  # noqa: E402
from fleet_runtime.pipeline.testmedia import face_frame  # noqa: E402
from rtsp_server import start_rtsp_server  # noqa: E402
from runtime_overrides import write_override  # noqa: E402
from runtime_sizes import TEST_VIDEO  # noqa: E402

CPU_NOTE = (
    "running on CPU: this machine has no GPU (CUDAExecutionProvider is used where one is)"
)


def get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def mjpeg_frames(url: str, count: int, timeout: float = 20) -> list:
    """The first ``count`` JPEG parts of a multipart/x-mixed-replace stream, decoded."""
    frames, buffer = [], b""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        assert response.headers["Content-Type"].startswith("multipart/x-mixed-replace; boundary=")
        while len(frames) < count:
            buffer += response.read1(65536)
            while (start := buffer.find(b"\xff\xd8")) >= 0 and (
                end := buffer.find(b"\xff\xd9", start)
            ) >= 0:
                jpeg, buffer = buffer[start : end + 2], buffer[end + 2 :]
                frames.append(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
    return frames[:count]


def sharpness(image) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


class RuntimeProcess:
    """`fleet-runtime run ...` in a subprocess; stderr collected on a thread."""

    def __init__(self, argv: list[str]) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fleet_runtime.runtime_cli", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.stderr: list[str] = []
        self.port: int | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line)
            found = re.search(r"serving http://127\.0\.0\.1:(\d+)/", line)
            if found:
                self.port = int(found.group(1))
                self._ready.set()

    def wait_ready(self, timeout: float = 60) -> str:
        assert self._ready.wait(timeout), "".join(self.stderr)
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        return self.proc.returncode, out


def wait_for(check, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


@pytest.fixture(scope="module")
def face_stream(still_face_video: Path):
    from rtsp_server import rtsp_available

    if not rtsp_available():
        pytest.skip("gst-rtsp-server missing")
    with start_rtsp_server(files={"faces": still_face_video}, h265=False) as server:
        yield server.url("faces")


def test_face_blur_over_rtsp_with_mjpeg_metrics_and_health(
    face_blur_app: Path, face_stream: str, tmp_path: Path
):
    events = tmp_path / "events.jsonl"
    runtime = RuntimeProcess(
        [
            "run",
            str(face_blur_app),
            "--camera",
            f"camera_node={face_stream}",
            "--http",
            "0",
            "--providers",
            "cuda,cpu",
            "--events",
            str(events),
            "--duration",
            "60",
        ]
    )
    try:
        base = runtime.wait_ready()
        wait_for(
            lambda: (
                json.loads(get(base + "/health")[1])["cameras"]["camera_node"]["frames_out"] >= 3
            )
        )
        frames = mjpeg_frames(base + "/video?camera=camera_node", 2)
        status, health_body = get(base + "/health")
        _, metrics_body = get(base + "/metrics")
    finally:
        code, out = runtime.stop()
    assert code == 0, "".join(runtime.stderr)
    logs = "".join(runtime.stderr)

    # no GPU on this machine: the CPU is the plan, so the app is healthy; the log, /health
    # and /metrics say plainly that it runs on the CPU, and nothing claims CUDA
    if gpu_present():
        pytest.skip("this machine has a GPU: the CPU-by-design path cannot be shown here")
    assert CPU_NOTE in logs
    health = json.loads(health_body)
    assert status == 200 and health["status"] == "ok" and health["ready"], health["reasons"]
    assert health["providers"]["face_model"]["fallback"] is True
    assert health["providers"]["face_model"]["active"] == ["CPUExecutionProvider"]
    assert f"model face_model: {CPU_NOTE}" in health["notes"]
    families = {f.name: f for f in parser.text_string_to_metric_families(metrics_body.decode())}
    [info] = families["fleet_runtime_provider_info"].samples
    assert info.labels == {
        "model": "face_model",
        "active": "CPUExecutionProvider",
        "requested": "CUDAExecutionProvider",
    }
    assert families["fleet_runtime_provider_fallback"].samples[0].value == 1
    assert "CUDAExecutionProvider" not in str(
        [s.labels.get("active") for f in families.values() for s in f.samples]
    )
    frames_in = {
        s.labels["camera"]: s.value
        for s in families["fleet_runtime_frames_in"].samples
        if s.name.endswith("_total")
    }
    assert frames_in["camera_node"] >= 3
    quantiles = {
        s.labels["quantile"]: s.value
        for s in families["fleet_runtime_inference_ms"].samples
        if "quantile" in s.labels
    }
    assert 0 < quantiles["0.5"] <= quantiles["0.95"]
    assert json.loads(out)["providers"] == {"face_model": "CPUExecutionProvider"}

    # the MJPEG frames show the scene with the face blurred
    detected = [
        json.loads(line) for line in events.read_text().splitlines() if '"inference"' in line
    ]
    x1, y1, x2, y2 = (int(v) for v in detected[0]["results"][0]["box"])
    original = face_frame(0, TEST_VIDEO)
    for frame in frames:
        assert frame.shape == original.shape
        face, before = frame[y1:y2, x1:x2], original[y1:y2, x1:x2]
        assert sharpness(face) < 0.25 * sharpness(before), "the face region must be blurred"
        # left of the face (outside the blur mask), below the "faces blurred" label
        strip = (slice(24, None), slice(0, max(4, x1 - 30)))
        assert np.abs(frame[strip].astype(int) - original[strip].astype(int)).mean() < 8


def test_rtsp_source_with_credentials(rtsp_server):
    good = SourceSpec(
        "door",
        "rtsp",
        rtsp_server.url("secure"),
        username=rtsp_server.username,
        password=rtsp_server.password,
        max_frames=3,
    )
    queue: FrameQueue = FrameQueue(maxsize=10, drop=False)
    source = Source(good, queue)
    source.start()
    source.join(20)
    assert source.status.frames == 3 and queue.get(0).image.shape == (240, 320, 3)

    bad = SourceSpec(
        "door", "rtsp", rtsp_server.url("secure"), username="viewer", password="wrong-Pa55word"
    )
    source = Source(bad, FrameQueue())
    source.start()
    wait_for(lambda: source.status.last_error, timeout=15)
    source.stop()
    source.join(10)
    assert "401" in source.status.last_error or "Unauthorized" in source.status.last_error
    assert (
        "wrong-Pa55word" not in source.status.last_error
        and "viewer" not in source.status.last_error
    )


def test_camera_passwords_from_cameras_file_never_show(
    color_app: Path, rtsp_server, tmp_path: Path
):
    """Credentials come from the cameras file (0600); logs, /health, events never hold them."""
    cameras = tmp_path / "cameras.json"
    secure = rtsp_server.url("secure")
    cameras.write_text(
        json.dumps(
            {
                "cameras": [
                    {
                        "name": "door",
                        "url": secure,
                        "username": rtsp_server.username,
                        "password": rtsp_server.password,
                    },
                    {
                        "name": "yard",
                        "url": secure,
                        "username": rtsp_server.username,
                        "password": "Wr0ng-Secret-99",
                    },
                ]
            }
        )
    )
    cameras.chmod(0o600)
    override = write_override(tmp_path / "override.json", ["door", "yard"])
    events = tmp_path / "events.jsonl"
    runtime = RuntimeProcess(
        [
            "--log-level",
            "DEBUG",
            "run",
            str(color_app),
            "--override",
            str(override),
            "--cameras",
            str(cameras),
            "--http",
            "0",
            "--events",
            str(events),
            "--duration",
            "60",
        ]
    )
    try:
        base = runtime.wait_ready()
        health = wait_for(
            lambda: (
                lambda h: (
                    h
                    if h["cameras"]["door"]["frames_out"] >= 3
                    and h["cameras"]["yard"]["last_error"]
                    else None
                )
            )(json.loads(get(base + "/health")[1]))
        )
        _, metrics = get(base + "/metrics")
    finally:
        code, out = runtime.stop()
    assert code == 0
    assert (
        health["cameras"]["yard"]["connected"] is False
        and "401" in health["cameras"]["yard"]["last_error"]
    )
    everything = (
        "".join(runtime.stderr) + out + json.dumps(health) + metrics.decode() + events.read_text()
    )
    for secret in (rtsp_server.password, "Wr0ng-Secret-99"):
        assert secret not in everything
