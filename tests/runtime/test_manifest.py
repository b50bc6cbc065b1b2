"""Application manifests: schemas with JSON paths, graph checks, overrides, camera limits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fleet_runtime.manifest import load_application, validate_application, validate_document
from fleet_runtime.manifest.application import param_error
from runtime_overrides import override_doc

EXAMPLES = Path(__file__).resolve().parents[2] / "runtime" / "examples"
GRAPH = "graphs/color_classifier/graph.json"


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """A copy of the colour example with a placeholder model file (validation does not load it)."""
    dest = tmp_path / "color_classifier"
    shutil.copytree(EXAMPLES / "color_classifier", dest)
    (dest / "packages/123456789012-COLOR_MODEL-1.0/model").mkdir(parents=True, exist_ok=True)
    (dest / "packages/123456789012-COLOR_MODEL-1.0/model/color.onnx").write_bytes(b"onnx")
    return dest


def edit(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def messages(app: Path, override: Path | None = None, **kw) -> list[str]:
    return [str(p) for p in validate_application(app, override, **kw)]


def test_examples_validate(app: Path, tmp_path: Path):
    assert messages(app) == []
    face = tmp_path / "face_blur"
    shutil.copytree(EXAMPLES / "face_blur", face)
    model = face / "packages/123456789012-CENTERFACE-1.0/model"
    model.mkdir(exist_ok=True)
    (model / "centerface.onnx").write_bytes(b"onnx")
    assert messages(face) == []


def test_resolved_application(app: Path):
    loaded = load_application(app)
    [code] = loaded.code_nodes
    assert code.params == {"threshold": 0.6}
    assert code.media_inputs == {"video_in": ["camera_node"]}
    assert code.media_outputs == {"video_out": ["output_node"]}
    assert code.entry.name == "application.py"
    assert list(loaded.model_nodes) == ["model_node"]
    assert loaded.camera_nodes["camera_node"].cameras == ["camera_node"]


def test_schema_errors_name_file_and_json_path(app: Path):
    def break_graph(doc):
        doc["nodeGraph"]["envelopeVersion"] = "2020-01-01"
        doc["nodeGraph"]["edges"][0]["consumer"] = "no port here"
        doc["nodeGraph"]["nodes"][0]["launch"] = "sometimes"

    edit(app / GRAPH, break_graph)
    found = messages(app)
    assert f"{GRAPH}: $.nodeGraph.envelopeVersion: '2021-01-01' was expected" in found
    assert any(
        m.startswith(f"{GRAPH}: $.nodeGraph.edges[0].consumer: 'no port here' does not match")
        for m in found
    )
    assert any(m.startswith(f"{GRAPH}: $.nodeGraph.nodes[0].launch:") for m in found)
    assert len(found) == 3


def test_edges_must_connect_existing_ports_of_matching_types(app: Path):
    def break_edges(doc):
        edges = doc["nodeGraph"]["edges"]
        edges[0]["consumer"] = "code_node.video_inn"
        edges.append({"producer": "threshold_param", "consumer": "code_node.video_in"})
        edges.append({"producer": "ghost_node.video_out", "consumer": "code_node.video_in"})

    edit(app / GRAPH, break_edges)
    found = messages(app)
    assert (
        f"{GRAPH}: $.nodeGraph.edges[0].consumer: code_node.video_inn is not one of"
        " code_node's inputs (threshold, video_in)" in found
    )
    assert (
        f"{GRAPH}: $.nodeGraph.edges[3]: threshold_param is float32 but code_node.video_in is media"
        in found
    )
    assert f"{GRAPH}: $.nodeGraph.edges[4].producer: no node named ghost_node" in found


def test_parameter_values_are_checked(app: Path):
    def bad_param(doc):
        doc["nodeGraph"]["nodes"].append({"name": "count", "interface": "int32", "value": 2.5})
        doc["nodeGraph"]["nodes"][4]["value"] = "high"

    edit(app / GRAPH, bad_param)
    found = messages(app)
    assert (
        f"{GRAPH}: $.nodeGraph.nodes[4].value: threshold_param: expected a number for float32,"
        " got 'high'" in found
    )
    assert (
        f"{GRAPH}: $.nodeGraph.nodes[5].value: count: expected a whole number within int32, got 2.5"
        in found
    )


@pytest.mark.parametrize(
    ("kind", "value", "ok"),
    [
        ("int32", 2**31, False),
        ("int32", -5, True),
        ("float32", True, False),
        ("boolean", 1, False),
        ("boolean", False, True),
        ("string", 3, False),
        ("float32", 1e39, False),
        ("float32", 0.5, True),
    ],
)
def test_param_types(kind, value, ok):
    assert (param_error(kind, value) is None) is ok


def test_missing_package_and_model_file(app: Path):
    shutil.rmtree(app / "packages/123456789012-COLOR_CODE-1.0")
    (app / "packages/123456789012-COLOR_MODEL-1.0/model/color.onnx").unlink()
    found = messages(app)
    assert (
        f"{GRAPH}: $.nodeGraph.packages[0]: package 123456789012::COLOR_CODE 1.0 not found: "
        "expected packages/123456789012-COLOR_CODE-1.0/package.json"
    ) in found
    assert (
        "packages/123456789012-COLOR_MODEL-1.0/descriptor.json: $.mlModelDescriptor.onnx.asset: "
        "model file not found: packages/123456789012-COLOR_MODEL-1.0/model/color.onnx; "
        f"fetch or build it with `fleet-runtime models fetch {app}`"
    ) in found


def test_model_descriptor_needs_onnx_section(app: Path):
    path = app / "packages/123456789012-COLOR_MODEL-1.0/descriptor.json"
    edit(path, lambda d: d["mlModelDescriptor"].pop("onnx"))
    edit(path, lambda d: d["mlModelDescriptor"]["inputs"][0].update(shape=[1, 0, 32, 32]))
    found = messages(app)
    rel = "packages/123456789012-COLOR_MODEL-1.0/descriptor.json"
    assert any(
        m.startswith(f"{rel}: $.mlModelDescriptor: 'onnx' is a required property") for m in found
    )
    assert (
        f"{rel}: $.mlModelDescriptor.inputs[0].shape[1]: 0 is less than the minimum of 1" in found
    )


def test_detection_decoder_needs_a_name():
    doc = {
        "mlModelDescriptor": {
            "envelopeVersion": "2021-01-01",
            "framework": "ONNX",
            "inputs": [{"name": "x", "shape": [1, 3, 8, 8]}],
            "onnx": {"asset": "m.onnx", "decoder": {"type": "detection"}},
        }
    }
    [problem] = validate_document(doc, "model", "d.json")
    assert str(problem) == "d.json: $.mlModelDescriptor.onnx.decoder: 'name' is a required property"


def test_override_binds_cameras_and_parameters(app: Path, tmp_path: Path):
    path = tmp_path / "override.json"
    path.write_text(json.dumps(override_doc(["warehouse-floor", "entrance-north"], threshold=0.9)))
    loaded = load_application(app, path)
    assert loaded.camera_nodes["camera_node"].cameras == ["warehouse-floor", "entrance-north"]
    assert loaded.code_nodes[0].params["threshold"] == 0.9


def test_camera_count_is_limited(app: Path, tmp_path: Path):
    path = tmp_path / "override.json"
    path.write_text(json.dumps(override_doc([f"cam{i}" for i in range(9)])))
    assert messages(app, path) == [
        f"{path}: $: 9 camera streams bound; at most 8 per application (raise with --max-cameras)"
    ]
    assert messages(app, path, max_cameras=9) == []


def test_override_of_fixed_node_is_refused(app: Path, tmp_path: Path):
    path = tmp_path / "override.json"
    doc = override_doc(["cam"])
    doc["nodeGraphOverrides"]["nodeOverrides"].append(
        {"replace": "code_node", "with": [{"name": "x"}]}
    )
    path.write_text(json.dumps(doc))
    assert messages(app, path) == [
        f"{path}: $.nodeGraphOverrides.nodeOverrides[1].replace: node code_node is not overridable"
    ]


def test_routing_port_must_be_declared(app: Path):
    rule = {"node": "code_node", "containerPort": 80, "hostPort": 9500}
    edit(app / GRAPH, lambda d: d["nodeGraph"].update(networkRoutingRules=[rule]))
    # schema errors come first: graph checks need a document of the right shape
    assert messages(app) == [
        f"{GRAPH}: $.nodeGraph.networkRoutingRules[0].hostPort:"
        " 9500 is greater than the maximum of 9000"
    ]
    edit(app / GRAPH, lambda d: d["nodeGraph"]["networkRoutingRules"][0].update(hostPort=8080))
    assert messages(app) == [
        f"{GRAPH}: $.nodeGraph.networkRoutingRules[0].containerPort: "
        "port 80 is not declared in the package's network.inboundPorts"
    ]
