"""ONNX Runtime sessions: provider fallback detected and reported, batching, model preparation."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from fleet_runtime.pipeline.inference import (  # noqa: E402
    CPU,
    CUDA,
    ModelSession,
    ProviderReport,
    gpu_present,
    normalize_providers,
)
from fleet_runtime.pipeline.models import ModelError, prepare_model  # noqa: E402


def doubling_model(path: Path) -> Path:
    """y = 2x on (N, 3, 4, 4) float input."""
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4, 4])
    two = numpy_helper.from_array(np.array([2.0], np.float32), "two")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])], "double", [x], [y], initializer=[two]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


DESCRIPTOR = {
    "inputs": [{"name": "x", "shape": [1, 3, 4, 4]}],
    "onnx": {"asset": "m.onnx", "batch": 2},
}


def test_provider_names():
    assert normalize_providers(None) == ["TensorrtExecutionProvider", CUDA, CPU]
    assert normalize_providers(["cpu"]) == [CPU]
    with pytest.raises(ValueError, match="unknown execution provider"):
        normalize_providers(["tpu"])


@pytest.mark.ci_may_skip("shows the CPU fallback, which a machine with CUDA cannot (CI machines have no GPU)")
def test_cuda_request_on_a_cpu_machine_falls_back_and_says_so(tmp_path: Path, caplog):
    if CUDA in ort.get_available_providers() or gpu_present():
        pytest.skip("this machine has CUDA: the fallback path cannot be shown here")
    caplog.set_level(logging.INFO, "fleet_runtime.inference")
    session = ModelSession("m", doubling_model(tmp_path / "m.onnx"), DESCRIPTOR, ["cuda", "cpu"])
    report = session.providers
    assert report.requested == [CUDA, CPU]
    assert report.active == [CPU] and report.primary == CPU
    assert report.fallback and not session.on_gpu
    # no GPU here: the CPU is the plan, said plainly, and not a warning
    assert report.warning is None
    assert report.note == f"running on CPU: this machine has no GPU ({CUDA} is used where one is)"
    assert report.note in caplog.text and "WARNING" not in caplog.text


def test_fallback_when_provider_is_in_build_but_does_not_load():
    report = ProviderReport(
        [CUDA, CPU], [CUDA, CPU], [CPU], gpu_present=True
    )  # onnxruntime-gpu without CUDA libraries, on a machine with a GPU
    assert report.fallback and report.note is None
    assert report.warning.startswith(f"{CUDA} requested but failed to load")
    assert not ProviderReport([CPU], [CPU], [CPU]).fallback


def test_a_cpu_build_on_a_gpu_machine_still_warns():
    report = ProviderReport([CUDA, CPU], [CPU], [CPU], gpu_present=True)
    assert report.warning == f"{CUDA} requested but not in this onnxruntime build; running on {CPU}"


def test_raw_run_and_batched_infer(tmp_path: Path):
    session = ModelSession("m", doubling_model(tmp_path / "m.onnx"), DESCRIPTOR, ["cpu"], threads=1)
    assert session.warm_up() > 0
    x = np.ones((1, 3, 4, 4), np.float32)
    [y] = session.run({"x": x})
    assert np.array_equal(y, 2 * x)
    from fleet_runtime.pipeline.preprocess import Geometry

    geometry = Geometry(1, 1, 0, 0, 4, 4)
    frames = [(np.full((3, 4, 4), i, np.float32), geometry) for i in range(5)]
    results = session.infer(frames)  # batches of 2, 2, 1
    assert [float(r[0][0, 0, 0]) for r in results] == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert session.timing.count == 1 + 3


@pytest.mark.parametrize(("threads", "workers", "per_run"), [(4, 2, 2), (1, 2, 1), (6, 3, 2)])
def test_stage_session_splits_the_models_threads(
    tmp_path: Path, threads: int, workers: int, per_run: int
):
    """--threads caps the stage too: each of its workers' runs gets threads // workers."""
    session = ModelSession(
        "m", doubling_model(tmp_path / "m.onnx"), DESCRIPTOR, ["cpu"], threads=threads
    )
    stream = session.streaming(workers)
    assert stream.get_session_options().intra_op_num_threads == per_run
    assert session.streaming(workers) is stream  # one stage session per model
    [y] = session.run({"x": np.ones((1, 3, 4, 4), np.float32)}, session=stream)
    assert float(y.max()) == 2.0


def test_prepare_model_sets_shape_and_unlists_weights(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FLEET_RUNTIME_CACHE", str(tmp_path / "cache"))
    source = doubling_model(tmp_path / "m.onnx")
    model = onnx.load(str(source))
    model.graph.input.append(
        onnx.helper.make_tensor_value_info("two", onnx.TensorProto.FLOAT, [1])
    )  # old exporters did this
    onnx.save(model, str(source))
    prepared = prepare_model(source, "x", [1, 3, 8, 8], batch=1)
    loaded = onnx.load(str(prepared))
    assert [i.name for i in loaded.graph.input] == ["x"]
    assert [d.dim_value for d in loaded.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 8, 8]
    assert prepare_model(source, "x", [1, 3, 8, 8], batch=1) == prepared  # cached
    with pytest.raises(ModelError, match="has no input 'data'"):
        prepare_model(source, "data", [1, 3, 8, 8], batch=1)


def test_a_cached_model_is_found_without_importing_onnx(tmp_path: Path, monkeypatch):
    """A runtime's restart finds its prepared model without the onnx import (seconds of its
    start-up on a busy core)."""
    import subprocess
    import sys

    monkeypatch.setenv("FLEET_RUNTIME_CACHE", str(tmp_path / "cache"))
    source = doubling_model(tmp_path / "m.onnx")
    prepared = prepare_model(source, "x", [1, 3, 8, 8], batch=1)
    probe = ("import sys\n"
             "from pathlib import Path\n"
             "from fleet_runtime.pipeline.models import prepare_model\n"
             f"print(prepare_model(Path({str(source)!r}), 'x', [1, 3, 8, 8], batch=1))\n"
             "print('onnx' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [str(prepared), "False"]


def test_centerface_runs_at_descriptor_resolution(centerface_onnx: Path):
    descriptor = {
        "inputs": [{"name": "input.1", "shape": [1, 3, 96, 160]}],
        "onnx": {
            "asset": "centerface.onnx",
            "batch": 2,
            "preprocess": {"size": [160, 96], "colorOrder": "RGB"},
            "decoder": {"type": "detection", "name": "centerface", "scoreThreshold": 0.5},
        },
    }
    session = ModelSession("faces", centerface_onnx, descriptor, ["cpu"])
    blank = np.zeros((90, 160, 3), np.uint8)
    results = session.infer([session.prepare(blank), session.prepare(blank)])
    assert [len(r) for r in results] == [0, 0]


def test_shape_mismatch_without_onnx_is_refused_in_one_line(tmp_path: Path, monkeypatch):
    import fleet_runtime.pipeline.inference as inference

    monkeypatch.setattr(
        inference, "prepare_model", lambda path, *a: path
    )  # as if onnx were missing
    descriptor = {"inputs": [{"name": "x", "shape": [1, 3, 8, 8]}], "onnx": {"asset": "m.onnx"}}
    with pytest.raises(ModelError) as err:
        ModelSession("m", doubling_model(tmp_path / "m.onnx"), descriptor, ["cpu"])
    assert str(err.value) == (
        "m.onnx: input x is ['N', 3, 4, 4], the descriptor says [1, 3, 8, 8]:"
        " pip install onnx so the runtime can adapt it"
    )
