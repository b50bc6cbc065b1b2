"""Applications written as AWS's Panorama samples are run unchanged by `fleet-runtime` (issue 13).

The apps (tests/runtime/panorama_apps.py) are our own code in the samples' style:
ports used without ``super().__init__()``, logs opened under
``/opt/aws/panorama/logs`` at import, assets opened under ``/panorama``, and
the package layouts Panorama's tooling produced.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("av")

from fleet_runtime.layout import Layout  # noqa: E402
from panorama_apps import VARIANTS, write_app, write_video  # noqa: E402


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "colours.mp4")


@pytest.fixture
def device(tmp_path: Path) -> Layout:
    """A device root (etc/fleet/device.json): app logs go under its var/log/fleet."""
    layout = Layout(tmp_path / "device")
    layout.etc.mkdir(parents=True)
    layout.device_json.write_text(json.dumps({"name": "dev1", "site": "hq", "serial": "S1"}))
    return layout


def fleet_runtime(
    layout: Layout, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLEET_ROOT": str(layout.root)}
    return subprocess.run(
        [sys.executable, "-m", "fleet_runtime.runtime_cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def run_offline(layout: Layout, app: Path, video: Path, events: Path, *extra: str):
    camera = [] if "--no-camera" in extra else ["--camera", f"front_door={video}"]
    extra = tuple(e for e in extra if e != "--no-camera")
    return fleet_runtime(
        layout, "run", str(app), *camera, "--offline", "--events", str(events), *extra
    )


def outputs(events: Path) -> list[dict]:
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    return [e for e in lines if e["event"] == "output"]


def exported_logs(layout: Layout) -> dict[str, str]:
    """What `fleet-agent logs export` (behind `fleet logs export`) bundles, by path."""
    proc = subprocess.run(
        [sys.executable, "-m", "fleet_runtime.agent.cli", "logs", "export", "--stdout"],
        env={**os.environ, "FLEET_ROOT": str(layout.root)},
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(fileobj=io.BytesIO(proc.stdout), mode="r:gz") as tar:
        return {
            m.name.split("/", 1)[1]: tar.extractfile(m).read().decode()  # type: ignore[union-attr]
            for m in tar
            if m.isfile()
        }


def test_tracker_without_super_init_runs_and_its_log_reaches_export(
    tmp_path: Path, device: Layout, video: Path
):
    app = write_app(tmp_path, "tracker", video=video)
    events = tmp_path / "events.jsonl"
    result = run_offline(device, app, video, events)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["frames_out"] == {"front_door": 24}
    assert summary["nodes"] == {"code_node": "stopped"}
    out = outputs(events)
    assert [e["labels"] for e in out[:1] + out[-1:]] == [["red track 1"], ["blue track 3"]]
    assert all(e["rects"] == 1 for e in out) and len(out) == 24
    bundle = exported_logs(device)
    log = bundle["var/log/fleet/apps/tracker_plain/app.log"]
    assert "tracker module loaded" in log and "tracker ready, min_score=0.50" in log
    assert "tracked blue as track 3" in log
    assert (
        not Path("/opt/aws/panorama/logs/app.log").exists()
        or "tracker" not in Path("/opt/aws/panorama/logs/app.log").read_text()
    )


def test_call_takes_arrays_of_any_dtype_as_the_simulator_did(
    tmp_path: Path, device: Layout, video: Path
):
    # AWS's simulator (DLR) turned every input into the model's float32: code written
    # against it often hands call() float64 (uint8 / 255.0) or a non-contiguous view
    app = write_app(tmp_path, "tracker", video=video)
    utils = app / "packages/123456789012-TRACKER_CODE-1.0/src/tracker_utils.py"
    text = utils.read_text()
    text = text.replace(".astype(np.float32) / 255.0", " / 255.0")
    text = text.replace(
        "np.ascontiguousarray(small.transpose(2, 0, 1)[None])", "small.transpose(2, 0, 1)[None]"
    )
    utils.write_text(text)
    events = tmp_path / "events.jsonl"
    result = run_offline(device, app, video, events)
    assert result.returncode == 0, result.stderr
    assert outputs(events)[-1]["labels"] == ["blue track 3"] and len(outputs(events)) == 24


METRICS_RELAY = """\
import multiprocessing
import os

METRICS_FIFO = "/opt/aws/panorama/logs/metrics_ipc"


class MetricsRelay(multiprocessing.Process):
    # as AWS's metric samples do: a child process owns a fifo in the logs folder
    def run(self):
        os.mkfifo(METRICS_FIFO)
        with open(METRICS_FIFO) as fifo, open("/opt/aws/panorama/logs/metrics.log", "a") as out:
            for line in fifo:
                out.write("metric " + line)


def send_startup_metric():
    relay = MetricsRelay()
    relay.start()
    deadline = 200
    while not os.path.exists(METRICS_FIFO) and relay.is_alive() and deadline:
        relay.join(0.1)
        deadline -= 1
    with open(METRICS_FIFO, "w") as fifo:
        fifo.write("AppStarted 1\\n")
    relay.join()
    os.remove(METRICS_FIFO)


send_startup_metric()
"""


def test_app_whose_child_process_makes_a_fifo_in_the_logs_folder(
    tmp_path: Path, device: Layout, video: Path
):
    app = write_app(tmp_path, "tracker", video=video)
    code = app / "packages/123456789012-TRACKER_CODE-1.0/src/app.py"
    code.write_text(METRICS_RELAY + code.read_text())
    result = run_offline(device, app, video, tmp_path / "events.jsonl")
    assert result.returncode == 0, result.stderr
    bundle = exported_logs(device)
    assert bundle["var/log/fleet/apps/tracker_plain/metrics.log"] == "metric AppStarted 1\n"
    assert not (device.logs / "apps/tracker_plain/metrics_ipc").exists()


def test_put_on_an_output_no_edge_consumes_is_accepted(tmp_path: Path, device: Layout, video: Path):
    # AWS's ONNX sample declares video_out and puts every batch on it, but its graph
    # has no output node: the appliance dropped those frames instead of failing
    app = write_app(tmp_path, "tracker", video=video)
    graph_path = app / "graphs" / app.name / "graph.json"
    graph = json.loads(graph_path.read_text())["nodeGraph"]
    graph["nodes"] = [n for n in graph["nodes"] if n["name"] != "output_node"]
    graph["edges"] = [e for e in graph["edges"] if e["consumer"] != "output_node.video_in"]
    graph["packages"] = [p for p in graph["packages"] if p["name"] != "panorama::hdmi_data_sink"]
    graph_path.write_text(json.dumps({"nodeGraph": graph}))
    events = tmp_path / "events.jsonl"
    result = run_offline(device, app, video, events)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["nodes"] == {"code_node": "stopped"}
    assert outputs(events) == []
    log = exported_logs(device)["var/log/fleet/apps/tracker_plain/app.log"]
    assert "tracked blue as track 3" in log


def test_app_prints_reach_its_console_log_not_the_run_summary(
    tmp_path: Path, device: Layout, video: Path
):
    # AWS's samples print progress per frame (flush=True); on the appliance that was the
    # app's console_output log. Here stdout carries the run summary that scripts parse.
    app = write_app(tmp_path, "tracker", video=video)
    code = app / "packages/123456789012-TRACKER_CODE-1.0/src/app.py"
    text = code.read_text().replace(
        "        self.outputs.video_out.put(streams)",
        '        print("frame done:", len(streams), "stream(s)", flush=True)\n'
        "        self.outputs.video_out.put(streams)",
    )
    code.write_text('print("tracker starting", flush=True)\n' + text)
    result = run_offline(device, app, video, tmp_path / "events.jsonl")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["frames_out"] == {"front_door": 24}
    console = exported_logs(device)["var/log/fleet/apps/tracker_plain/console_output.log"]
    assert console.splitlines() == ["tracker starting"] + ["frame done: 1 stream(s)"] * 24
    assert "frame done: 1 stream(s)" in result.stderr  # still visible on the terminal


def test_console_log_rotates_instead_of_filling_the_disk(tmp_path: Path):
    from fleet_runtime.panoramasdk.console import _RotatingFile

    console = _RotatingFile(tmp_path / "console_output.log", max_bytes=100, backups=2)
    for index in range(35):
        console.write(f"frame {index:04d}\n")  # 11 bytes a line
    console.flush()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["console_output.log", "console_output.log.1", "console_output.log.2"]
    assert all(p.stat().st_size <= 110 for p in tmp_path.iterdir())
    assert (tmp_path / "console_output.log").read_text().splitlines()[-1] == "frame 0034"


def test_panorama_model_descriptor_says_how_to_bring_its_model(
    tmp_path: Path, device: Layout, video: Path
):
    # a descriptor as Panorama's samples shipped it: a MXNET model, no onnx section
    app = write_app(tmp_path, "tracker", video=video)
    descriptor = app / "packages/123456789012-TRACKER_MODEL-1.0/descriptor.json"
    doc = json.loads(descriptor.read_text())
    del doc["mlModelDescriptor"]["onnx"]
    doc["mlModelDescriptor"]["framework"] = "MXNET"
    descriptor.write_text(json.dumps(doc))
    checked = fleet_runtime(device, "validate", str(app))
    assert checked.returncode == 1
    assert checked.stdout.splitlines() == [
        "packages/123456789012-TRACKER_MODEL-1.0/descriptor.json: $.mlModelDescriptor: 'onnx'"
        " is a required property: export the MXNET model to ONNX once and name the .onnx file"
        " (in the model's asset folder) in mlModelDescriptor.onnx.asset"
    ]


def _retry_every_frame(app: Path) -> None:
    """The app's loop catches everything (bare except:) and carries on, as much field code does."""
    code = app / "packages/123456789012-TRACKER_CODE-1.0/src/app.py"
    code.write_text(
        code.read_text().replace(
            "    while True:\n        tracker.process_streams()\n",
            "    while True:\n        try:\n            tracker.process_streams()\n"
            '        except:\n            log.exception("frame failed, next one")\n',
        )
    )


def test_app_that_swallows_the_end_of_its_streams_still_ends_the_run(
    tmp_path: Path, device: Layout, video: Path
):
    app = write_app(tmp_path, "tracker", video=video)
    _retry_every_frame(app)
    result = fleet_runtime(  # 60 s: a guard against the old endless loop, not a measure
        device, "run", str(app), "--camera", f"front_door={video}", "--offline", timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["frames_out"] == {"front_door": 24}
    log = exported_logs(device)["var/log/fleet/apps/tracker_plain/app.log"]
    assert log.count("frame failed, next one") == 1  # told once, then held: no flood


def test_sigterm_stops_a_live_app_that_swallows_the_stop(tmp_path: Path, device: Layout):
    app = write_app(tmp_path, "tracker")
    _retry_every_frame(app)
    events = tmp_path / "events.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleet_runtime.runtime_cli",
            "run",
            str(app),
            "--camera",
            "front_door=synthetic:96x64@10",
            "--events",
            str(events),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "FLEET_ROOT": str(device.root)},
    )
    try:
        for _ in range(600):  # up to 60 s for the first frame out (the wait ends on it)
            if events.exists() and '"output"' in events.read_text():
                break
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)  # a guard against hanging, not a measure
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    # The node swallowed the stop, asked for frames again and was held there: the run ended.
    # (The summary's node state is the one SIGTERM found, as for --duration: not asserted.)
    assert "caught ApplicationStopped and asked again: holding it" in err, err[-2000:]
    assert "code_node" in json.loads(out)["nodes"]


def test_app_running_its_own_onnx_model_from_panorama_path(
    tmp_path: Path, device: Layout, video: Path
):
    app = write_app(tmp_path, "ort_app", video=video)
    events = tmp_path / "events.jsonl"
    result = run_offline(device, app, video, events)
    assert result.returncode == 0, result.stderr
    labels = [e["labels"][0].split()[0] for e in outputs(events)]
    assert labels == ["red"] * 8 + ["green"] * 8 + ["blue"] * 8
    log = exported_logs(device)["var/log/fleet/apps/ort_app_plain/app.log"]
    assert "own model loaded from /panorama/onnx_model/model.onnx with 3 labels" in log
    assert "own model says blue" in log
    assert "fleet_runtime" not in log  # the runtime's own records stay out of the app's log


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "plain"])
def test_each_package_layout_validates_and_runs(
    variant: str, tmp_path: Path, device: Layout, video: Path
):
    app = write_app(tmp_path, "tracker", variant, video=video)
    checked = fleet_runtime(device, "validate", str(app), "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    warnings = [w["message"] for w in json.loads(checked.stdout)["warnings"]]
    if variant == "setup_sh":
        assert warnings == ["line 4 is not run: pip3 install -r requirements.txt"]
    elif variant == "cli_project":
        assert len(warnings) == 1 and "using src/ and descriptor.json" in warnings[0]
    elif variant.startswith("built_"):
        state = "a built container image" if variant == "built_image" else "missing"
        assert len(warnings) == 1 and f"tar.gz is {state}: using src/" in warnings[0]
    elif variant == "impl_requirements" and not _cuda_works():
        assert len(warnings) == 1 and "inferenceAccelerators" in warnings[0]
    else:
        assert warnings == []
    events = tmp_path / "events.jsonl"
    # the camera package's own default streamUrl is the video: no --camera needed
    extra = ("--no-camera",) if variant.startswith("camera_") else ()
    result = run_offline(device, app, video, events, *extra)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["frames_out"] == {"front_door": 24}
    assert outputs(events)[-1]["labels"] == ["blue track 3"]


def _cuda_works() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def test_crash_looping_app_exits_non_zero_with_its_error(
    tmp_path: Path, device: Layout, video: Path
):
    app = write_app(tmp_path, "tracker", video=video)
    code = app / "packages/123456789012-TRACKER_CODE-1.0/src/app.py"
    code.write_text(
        code.read_text().replace(
            'log.info("tracker module loaded")',
            'raise FileNotFoundError("calibration.json is missing")',
        )
    )
    result = run_offline(device, app, video, tmp_path / "events.jsonl")
    assert result.returncode == 1
    assert json.loads(result.stdout)["nodes"] == {"code_node": "crash_loop"}
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("fleet-runtime: code node code_node is crash-looping (")
    assert last.endswith("FileNotFoundError: calibration.json is missing")
    bench = fleet_runtime(
        device, "bench", str(app), "--frames", "5", "--json", "--camera", f"front_door={video}"
    )
    assert bench.returncode == 1
    assert "calibration.json is missing" in bench.stderr.strip().splitlines()[-1]


def test_live_run_whose_node_only_crashed_exits_non_zero(
    tmp_path: Path, device: Layout, video: Path
):
    """A run bounded by --duration (the camera loops) where the node crashed throughout."""
    app = write_app(tmp_path, "tracker", video=video)
    code = app / "packages/123456789012-TRACKER_CODE-1.0/src/app.py"
    code.write_text(code.read_text().replace("import tracker_utils", "import tracker_utils\n1 / 0"))
    result = fleet_runtime(
        device, "run", str(app), "--camera", f"front_door={video}", "--duration", "2"
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("fleet-runtime: code node code_node ")
    assert last.endswith("ZeroDivisionError: division by zero")


def test_node_that_never_puts_a_frame_fails_the_run(tmp_path: Path, device: Layout, video: Path):
    app = write_app(tmp_path, "tracker", video=video)
    code = app / "packages/123456789012-TRACKER_CODE-1.0/src/app.py"
    code.write_text(code.read_text().replace("        self.outputs.video_out.put(streams)\n", ""))
    result = run_offline(device, app, video, tmp_path / "events.jsonl")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "fleet-runtime: code node code_node never put out a frame while the cameras delivered"
        " 24 (no error raised: is it stuck before its loop?)"
    )


def test_missing_python_packages_are_reported_before_the_first_frame(
    tmp_path: Path, device: Layout, video: Path
):
    app = write_app(tmp_path, "tracker", video=video)
    src = app / "packages/123456789012-TRACKER_CODE-1.0/src"
    utils = src / "tracker_utils.py"
    utils.write_text("import tensorflow as tf\n" + utils.read_text())
    (src / "requirements.txt").write_text("numpy\ntorch==2.1.0  # the detector\n")
    checked = fleet_runtime(device, "validate", str(app))
    assert checked.returncode == 1
    assert checked.stdout.splitlines() == [
        "packages/123456789012-TRACKER_CODE-1.0/src/requirements.txt: line 2: code_node"
        " requires torch==2.1.0, which is not installed here: pip install 'torch==2.1.0' on"
        " the device, or build the app without it",
        "packages/123456789012-TRACKER_CODE-1.0/src/tracker_utils.py: line 1: code_node"
        " imports tensorflow, which is not installed here: pip install tensorflow on the"
        " device, or move that model to ONNX and call a model node",
    ]
    result = run_offline(device, app, video, tmp_path / "events.jsonl")
    assert result.returncode == 1 and result.stdout == ""
    assert "Traceback" not in result.stderr
    assert [line.split(": line")[0] for line in result.stderr.strip().splitlines()] == [
        "fleet-runtime: packages/123456789012-TRACKER_CODE-1.0/src/requirements.txt",
        "fleet-runtime: packages/123456789012-TRACKER_CODE-1.0/src/tracker_utils.py",
    ]
    assert not (device.logs / "apps").exists()  # the app never started


def test_missing_gstreamer_bindings_name_the_package_that_provides_them(
    tmp_path: Path, device: Layout, video: Path
):
    import importlib.util

    if importlib.util.find_spec("gi") is not None:
        pytest.skip("this Python has the GStreamer bindings")
    app = write_app(tmp_path, "tracker", video=video)
    utils = app / "packages/123456789012-TRACKER_CODE-1.0/src/tracker_utils.py"
    utils.write_text("import gi\ngi.require_version('Gst', '1.0')\n" + utils.read_text())
    checked = fleet_runtime(device, "validate", str(app))
    assert checked.returncode == 1
    assert "code_node imports gi, which is not installed here: pip install PyGObject" in (
        checked.stdout
    )


def test_app_binding_tensors_to_cuda_is_reported_before_the_first_frame(
    tmp_path: Path, device: Layout, video: Path
):
    if _cuda_works():
        pytest.skip("this machine has CUDA: the app may run")
    app = write_app(tmp_path, "ort_app", "plain", video=video, device="cuda")
    code = "packages/123456789012-ORT_APP_CODE-1.0/src/app.py"
    lines = (app / code).read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if "ortvalue_from_numpy" in text)
    expected = (
        f"{code}: line {line}: code_node puts tensors on CUDA itself"
        " (ortvalue_from_numpy(..., 'cuda')), and this machine has no CUDA: run it on a GPU"
        " device, or use 'cpu'"
    )
    checked = fleet_runtime(device, "validate", str(app))
    assert checked.returncode == 1 and checked.stdout.splitlines() == [expected]
    result = run_offline(device, app, video, tmp_path / "events.jsonl")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"fleet-runtime: {expected}"]


class _Context:
    """The runner's side of a code node, reduced to what the SDK reads while wiring."""

    name = "code_node"
    media_inputs = ["video_in"]
    media_outputs = ["video_out"]
    params = {"min_score": 0.5}

    def get_media(self, port, timeout):
        return []

    def put_media(self, port, streams):
        pass

    def call(self, inputs, model_node, timeout):
        return (model_node, timeout)


def test_ports_are_wired_in_new_once_with_or_without_super_init():
    from fleet_runtime import panoramasdk

    class Bare(panoramasdk.node):
        def __init__(self):
            self.min_score = self.inputs.min_score.get()  # no super().__init__()

    class Polite(panoramasdk.node):
        def __init__(self):
            self.before = self.inputs
            super().__init__()

    panoramasdk.bind(_Context())
    try:
        bare, polite = Bare(), Polite()
    finally:
        panoramasdk.bind(None)
    assert bare.min_score == 0.5 and hasattr(bare.outputs, "video_out")
    assert polite.inputs is polite.before  # super().__init__() did not wire again
    assert bare.call({"x": 1}, "model_node", time_out=2) == ("model_node", 2)


def test_media_has_the_simulators_shape_attributes():
    import numpy as np
    from fleet_runtime import panoramasdk
    from fleet_runtime.pipeline.frames import Frame

    stream = panoramasdk.media(Frame("front_door", 0, np.zeros((48, 64, 3), np.uint8)))
    assert (stream.w, stream.h, stream.c) == (48, 64, 3)  # w, h, c = image.shape, as there
    stream.image = np.zeros((24, 32, 3), np.uint8)
    assert (stream.w, stream.h) == (24, 32)


def test_other_appliance_paths_are_refused_not_written_on_the_host(tmp_path: Path):
    from fleet_runtime.panoramasdk.paths import PathTable

    table = PathTable({"/panorama": str(tmp_path / "code"), "/opt/aws/panorama/logs": "/l"})
    assert table.map(Path("/panorama/a/b.onnx")) == f"{tmp_path}/code/a/b.onnx"
    assert table.map("/opt/aws/panorama/logs/app.log") == "/l/app.log"
    assert table.map("/panoramax/file") == "/panoramax/file"
    with pytest.raises(PermissionError, match="only /panorama"):
        table.map("/opt/aws/panorama/secrets/key")


@pytest.mark.parametrize(
    ("script", "entry"),
    [
        ("#!/bin/bash\nexec python3 /panorama/main.py\n", "/panorama/main.py"),
        ("cd /panorama/app && PYTHONPATH=. python3.8 -u run.py --x 1\n", "/panorama/app/run.py"),
        ("python3 -m pkg.main\n", "/panorama/pkg/main.py"),
        ("echo starting\n", None),
    ],
)
def test_launch_scripts_name_their_python_entry(script: str, entry: str | None):
    from fleet_runtime.manifest.layouts import python_entry

    assert python_entry(script)[0] == entry


def test_paths_the_device_unit_already_bound_are_left_alone(tmp_path: Path):
    from fleet_runtime.panoramasdk import paths

    code = tmp_path / "code"
    code.mkdir()
    (tmp_path / "bound").symlink_to(code)  # stands in for BindReadOnlyPaths=code:/panorama
    assert paths._bound(str(tmp_path / "bound"), code)
    assert not paths._bound(str(tmp_path / "unbound"), code)
    # A /panorama the host has of its own is another inode than `code`: still remapped.
    table = paths.device_paths(code, tmp_path / "logs", tmp_path / "storage")
    assert dict(table.mapping) == {
        "/panorama": str(code),
        "/opt/aws/panorama/logs": str(tmp_path / "logs"),
        "/opt/aws/panorama/storage": str(tmp_path / "storage"),
    }
