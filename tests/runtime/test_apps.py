"""Applications run by the graph runner: Panorama code unchanged, supervision, batching."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
cv2 = pytest.importorskip("cv2")

from fleet_runtime.manifest import load_application  # noqa: E402
from fleet_runtime.pipeline.runner import Runner, RunOptions  # noqa: E402
from fleet_runtime.pipeline.sources import SourceSpec  # noqa: E402
from runtime_overrides import write_override  # noqa: E402

CODE = "packages/123456789012-COLOR_CODE-1.0/src/application.py"


@pytest.fixture
def colour_frames(tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for name, bgr in (
        ("0", (0, 0, 230)),
        ("1", (0, 230, 0)),
        ("2", (230, 0, 0)),
        ("3", (90, 90, 90)),
    ):
        cv2.imwrite(str(folder / f"{name}.png"), np.full((60, 80, 3), bgr, np.uint8))
    return folder


def offline(name: str, kind: str, uri: str = "", **kw) -> SourceSpec:
    return SourceSpec(name, kind, uri, realtime=False, drop=False, loop=False, **kw)


def wait_for(check, what: str, timeout: float = 60.0) -> None:
    """Poll `check` until it holds; a loaded machine only makes this slower."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"still waiting after {timeout:g}s for {what}"
        time.sleep(0.05)


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_panorama_style_app_runs_unchanged(color_app: Path, colour_frames: Path, tmp_path: Path):
    """The colour app only uses panoramasdk: node, get, call with arrays, add_label, put."""
    events = tmp_path / "events.jsonl"
    runner = Runner(
        load_application(color_app),
        RunOptions(
            cameras={"camera_node": offline("camera_node", "images", str(colour_frames))},
            events=events,
        ),
    )
    snap = runner.run(duration=30)
    assert snap["nodes"]["code_node"]["state"] == "stopped"  # streams ended, app stopped cleanly
    assert snap["cameras"]["camera_node"]["frames_out"] == 4
    labels = [e["labels"][0].split()[0] for e in read_events(events) if e["event"] == "output"]
    assert labels == ["red", "green", "blue", "unsure"]  # grey is below the 0.6 threshold


def test_parameters_come_from_override(color_app: Path, colour_frames: Path, tmp_path: Path):
    override = write_override(tmp_path / "override.json", ["lobby"], threshold=0.1)
    events = tmp_path / "events.jsonl"
    runner = Runner(
        load_application(color_app, override),
        RunOptions(
            cameras={"lobby": offline("lobby", "images", str(colour_frames))}, events=events
        ),
    )
    runner.run(duration=30)
    outputs = [e for e in read_events(events) if e["event"] == "output"]
    assert {e["camera"] for e in outputs} == {"lobby"}
    assert "unsure" not in {e["labels"][0].split()[0] for e in outputs}


CRASHING = """
import panoramasdk

class Application(panoramasdk.node):
    def process_streams(self):
        streams = self.inputs.video_in.get()
        raise RuntimeError("bad frame handling")

app = Application()
while True:
    try:
        app.process_streams()
    except ValueError:
        pass
"""


def test_crashing_code_node_is_restarted_with_backoff(color_app: Path, tmp_path: Path):
    app = tmp_path / "crashy"
    shutil.copytree(color_app, app)
    (app / CODE).write_text(CRASHING)
    events = tmp_path / "events.jsonl"
    options = RunOptions(
        cameras={"camera_node": SourceSpec("camera_node", "synthetic", size=(32, 24), fps=50)},
        events=events,
        http_port=0,
        restart_initial=0.05,
        restart_max=0.2,
    )
    runner = Runner(load_application(app), options)
    runner.start()
    try:
        wait_for(lambda: runner.snapshot()["nodes"]["code_node"]["restarts"] >= 3, "3 restarts")
        health = runner.health_doc()
        metrics = runner.metrics_text()
    finally:
        runner.stop()
    node = health["nodes"]["code_node"]
    assert node["restarts"] >= 3 and node["state"] == "crash_loop"
    assert node["last_error"] == "RuntimeError: bad frame handling"
    assert health["status"] == "degraded"
    assert any(r.startswith("node code_node: crash_loop") for r in health["reasons"])
    assert 'fleet_runtime_crash_loop{node="code_node"} 1' in metrics
    backoffs = [e["backoff_s"] for e in read_events(events) if e["event"] == "crash"]
    assert backoffs[:3] == [0.05, 0.1, 0.2]  # exponential, capped at restart_max


def test_cameras_are_batched_into_one_inference(face_blur_app: Path, tmp_path: Path):
    override = write_override(tmp_path / "override.json", ["a", "b", "c"])
    cameras = {n: offline(n, "synthetic", size=(160, 90), max_frames=6) for n in "abc"}
    runner = Runner(
        load_application(face_blur_app, override), RunOptions(cameras=cameras, providers=["cpu"])
    )
    snap = runner.run(duration=60)
    assert {c: s["frames_out"] for c, s in snap["cameras"].items()} == {"a": 6, "b": 6, "c": 6}
    runs = snap["models"]["face_model"]["runs"]
    assert runs < 18, "three cameras should share inference runs (model batch is 4)"


def test_face_blur_on_a_video_file(face_blur_app: Path, face_video: Path, tmp_path: Path):
    events, record = tmp_path / "events.jsonl", tmp_path / "out.mp4"
    runner = Runner(
        load_application(face_blur_app),
        RunOptions(
            cameras={"camera_node": offline("camera_node", "file", str(face_video))},
            events=events,
            record=record,
            providers=["cpu"],
        ),
    )
    snap = runner.run(duration=120)
    assert snap["cameras"]["camera_node"]["frames_out"] == 45
    detections = [e for e in read_events(events) if e["event"] == "inference"]
    assert len(detections) >= 40, "the astronaut's face is found in (nearly) every frame"
    assert all(
        d["results"][0]["label"] == "face" and d["results"][0]["score"] > 0.5 for d in detections
    )
    import av

    with av.open(str(record)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 45


TOKEN = "t" * 43  # what fleet_runtime.http_token makes: 32 random bytes, URL-safe base64


def post(url: str) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, method="POST", headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_on_signal_node_waits_for_resume_and_pauses(color_app: Path, tmp_path: Path):
    app = tmp_path / "signalled"
    shutil.copytree(color_app, app)
    graph = app / "graphs/color_classifier/graph.json"
    doc = json.loads(graph.read_text())
    doc["nodeGraph"]["nodes"][0]["launch"] = "onSignal"
    graph.write_text(json.dumps(doc))
    camera = SourceSpec("camera_node", "synthetic", size=(32, 24), fps=30)
    runner = Runner(load_application(app), RunOptions(cameras={"camera_node": camera}, http_port=0,
                                                             http_token=TOKEN))
    runner.start()
    base = f"http://127.0.0.1:{runner.http.port}"

    def out() -> int:
        return runner.snapshot()["cameras"]["camera_node"]["frames_out"]

    def fed_more(than: int, frames: int = 15):
        """The camera decoded `frames` more frames than `than` (the node could have had them)."""
        return lambda: runner.snapshot()["cameras"]["camera_node"]["frames_in"] >= than + frames

    def fed() -> int:
        return int(runner.snapshot()["cameras"]["camera_node"]["frames_in"])

    try:
        wait_for(fed_more(0), "camera frames before RESUME")
        assert runner.snapshot()["nodes"]["code_node"]["state"] == "paused" and out() == 0
        assert post(base + "/signal?node=code_node&signal=RESUME") == (200, {"ok": True})
        wait_for(lambda: out() >= 3, "3 frames out after RESUME")
        assert post(base + "/signal?node=code_node&signal=PAUSE")[0] == 200
        assert runner.snapshot()["nodes"]["code_node"]["state"] == "paused"
        paused_at = out()
        wait_for(fed_more(fed(), 30), "camera frames while paused")
        assert out() <= paused_at + 1  # only a frame it had already taken may still come out
        assert post(base + "/signal?node=code_node&signal=STOP") == (
            400,
            {"ok": False, "error": "unknown signal 'STOP': use PAUSE or RESUME"},
        )
        assert post(base + "/signal?node=nope&signal=RESUME") == (
            400,
            {"ok": False, "error": "no code node 'nope'"},
        )
    finally:
        runner.stop()
