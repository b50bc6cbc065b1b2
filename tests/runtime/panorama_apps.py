"""Applications written the way AWS's published Panorama samples are written (our own code).

``tracker``: a node subclass that never calls ``super().__init__()``, reads a
parameter, logs to ``/opt/aws/panorama/logs/app.log`` from import time, imports
a sibling module and calls a model node with arrays.
``ort_app``: opens its own ONNX model and labels under ``/panorama/onnx_model/``
and runs ONNX Runtime itself (``device`` "cuda" binds its input to the GPU).

``write_app(dest, kind, variant)`` lays either out as a panorama-cli project;
``variant`` picks one of the package layouts Panorama's tooling produced
(see VARIANTS).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ACCOUNT = "123456789012"
VARIANTS = (
    "plain", "impl_requirements", "setup_sh", "camera_package", "camera_template", "cli_project",
    "built_image", "built_clone",
)
BUILT = "4f2a" * 16  # the sha-like name panorama-cli build-container gives an image
LABELS = ["red", "green", "blue"]

TRACKER_APP = '''\
import logging
from logging.handlers import RotatingFileHandler

import numpy as np
import panoramasdk

import tracker_utils

log = logging.getLogger("tracker")
log.setLevel(logging.INFO)
handler = RotatingFileHandler("/opt/aws/panorama/logs/app.log", maxBytes=10000000, backupCount=2)
handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
log.addHandler(handler)
log.info("tracker module loaded")


class Tracker(panoramasdk.node):
    def __init__(self):
        # as in many published samples: no super().__init__()
        self.min_score = self.inputs.min_score.get()
        self.book = tracker_utils.TrackBook()
        log.info("tracker ready, min_score=%.2f", self.min_score)

    def process_streams(self):
        streams = self.inputs.video_in.get()
        for stream in streams:
            scores = self.call({"data": tracker_utils.preprocess(stream.image)}, "model_node")
            label, score = tracker_utils.best(scores[0][0])
            if score < self.min_score:
                continue
            box = tracker_utils.bright_box(stream.image)
            track = self.book.update(stream.stream_uri, label)
            stream.add_rect(*box)
            stream.add_label("%s track %d" % (label, track), box[0], box[1])
            log.info("tracked %s as track %d (score %.2f)", label, track, score)
        self.outputs.video_out.put(streams)


def main():
    tracker = Tracker()
    while True:
        tracker.process_streams()


main()
'''

TRACKER_UTILS = '''\
import cv2
import numpy as np

LABELS = ["red", "green", "blue"]


def preprocess(image):
    small = cv2.resize(image, (32, 32))[:, :, ::-1].astype(np.float32) / 255.0
    return np.ascontiguousarray(small.transpose(2, 0, 1)[None])


def best(scores):
    index = int(np.argmax(scores))
    return LABELS[index], float(scores[index])


def bright_box(image):
    h, w = image.shape[:2]
    ys, xs = np.nonzero(image.min(axis=2) > 180)
    if len(xs) == 0:
        return 0.1, 0.1, 0.9, 0.9
    return xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h


class TrackBook:
    def __init__(self):
        self.last = {}
        self.count = 0

    def update(self, stream, label):
        if self.last.get(stream, (None, 0))[0] != label:
            self.count += 1
            self.last[stream] = (label, self.count)
        return self.last[stream][1]
'''

ORT_APP = '''\
import logging

import cv2
import numpy as np
import onnxruntime as ort
import panoramasdk

MODEL_PATH = "/panorama/onnx_model/model.onnx"
LABELS_PATH = "/panorama/onnx_model/labels.txt"

logging.basicConfig(
    filename="/opt/aws/panorama/logs/app.log",
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
)
log = logging.getLogger("ort_app")


class Application(panoramasdk.node):
    def __init__(self):
        super().__init__()
        with open(LABELS_PATH) as labels:
            self.labels = labels.read().split()
        self.session = ort.InferenceSession(MODEL_PATH, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        log.info("own model loaded from %s with %d labels", MODEL_PATH, len(self.labels))

    def infer(self, blob):
{infer}

    def process_streams(self):
        streams = self.inputs.video_in.get()
        for stream in streams:
            small = cv2.resize(stream.image, (32, 32))[:, :, ::-1].astype(np.float32) / 255.0
            scores = self.infer(np.ascontiguousarray(small.transpose(2, 0, 1)[None]))
            best = int(np.argmax(scores))
            stream.add_rect(0.05, 0.05, 0.95, 0.95)
            stream.add_label("%s %.2f" % (self.labels[best], scores[best]), 0.05, 0.1)
            log.info("own model says %s", self.labels[best])
        self.outputs.video_out.put(streams)


app = Application()
while True:
    app.process_streams()
'''

INFER_CPU = """\
        return self.session.run(None, {self.input_name: blob})[0][0]"""

INFER_CUDA = """\
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(
            self.input_name, ort.OrtValue.ortvalue_from_numpy(blob, "cuda", 0)
        )
        binding.bind_output(self.session.get_outputs()[0].name)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0][0]"""

SETUP_SH = """\
#!/bin/bash
set -e
cd /panorama
pip3 install -r requirements.txt
exec python3 -u app.py
"""


def build_model(path: Path) -> Path:
    """Average colour -> softmax over (red, green, blue): input ``data`` [N,3,32,32]."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper, save

    data = helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 32, 32])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3])
    gain = numpy_helper.from_array(np.array([12.0], np.float32), "gain")
    nodes = [
        helper.make_node("GlobalAveragePool", ["data"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Mul", ["flat", "gain"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
    ]
    graph = helper.make_graph(nodes, "colour", [data], [scores], initializer=[gain])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    save(model, str(path))
    return path


def write_video(path: Path, frames: int = 24, size: tuple[int, int] = (96, 64)) -> Path:
    """Red, then green, then blue frames with a white square moving across (H.264)."""
    import av
    import numpy as np

    width, height = size
    with av.open(str(path), "w") as container:
        stream: Any = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            image = np.zeros((height, width, 3), np.uint8)
            image[:, :, 2 - (index * 3 // frames)] = 220  # BGR: red, green, blue thirds
            x = 4 + index * (width - 24) // frames
            image[20:36, x : x + 16] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _write(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc, indent=1))


def _package(name: str, assets: list[Any], interfaces: list[Any]) -> dict[str, Any]:
    return {
        "nodePackage": {
            "envelopeVersion": "2021-01-01",
            "name": name,
            "version": "1.0",
            "description": f"{name} package",
            "assets": assets,
            "interfaces": interfaces,
        }
    }


def _code_package(app: Path, kind: str, variant: str, source: dict[str, str]) -> None:
    pdir = app / "packages" / f"{ACCOUNT}-{kind.upper()}_CODE-1.0"
    for name, text in source.items():
        _write(pdir / "src" / name, text)
    impl: dict[str, Any] = {
        "type": "container", "assetUri": "src", "descriptorUri": "descriptor.json"
    }
    entry = {"path": "python3", "name": "/panorama/app.py"}
    if variant == "impl_requirements":
        impl["requirements"] = [{
            "type": "hardware_access",
            "inferenceAccelerators": [
                {"deviceType": "nvhost_gpu", "sharedResourcePolicy": {"policy": "allow_all"}}
            ],
        }]
    if variant == "setup_sh":
        _write(pdir / "src" / "setup.sh", SETUP_SH)
        _write(pdir / "src" / "requirements.txt", "numpy>=1.20\nopencv-python\n")
        entry = {"path": "bash", "name": "/panorama/setup.sh"}
    assets = [{"name": "code_asset", "implementations": [impl]}]
    if variant == "cli_project":
        assets = []
    if variant in ("cli_project", "built_image", "built_clone"):
        _write(pdir / "Dockerfile", "FROM public.ecr.aws/panorama/panorama-application\n"
               "COPY src /panorama\n")
    if variant.startswith("built_"):
        # after build-container: assets/<sha>.tar.gz is a Docker image, assets/<sha>.json
        # the descriptor's copy; a cloned project has neither (assets/ is not committed)
        impl.update(assetUri=f"{BUILT}.tar.gz", descriptorUri=f"{BUILT}.json")
        if variant == "built_image":
            _write(app / "assets" / f"{BUILT}.json",
                   {"runtimeDescriptor": {"envelopeVersion": "2021-01-01", "entry": entry}})
            _image_tarball(app / "assets" / f"{BUILT}.tar.gz")
    inputs = [{"name": "video_in", "type": "media"}]
    if kind == "tracker":
        inputs.append({"name": "min_score", "type": "float32"})
    _write(pdir / "descriptor.json",
           {"runtimeDescriptor": {"envelopeVersion": "2021-01-01", "entry": entry}})
    _write(pdir / "package.json", _package(f"{kind.upper()}_CODE", assets, [{
        "name": "interface", "category": "business_logic", "asset": "code_asset",
        "inputs": inputs, "outputs": [{"name": "video_out", "type": "media"}],
    }]))


def _image_tarball(path: Path) -> None:
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        data = b'[{"Config": "config.json", "Layers": []}]'
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def _model_package(app: Path) -> None:
    pdir = app / "packages" / f"{ACCOUNT}-TRACKER_MODEL-1.0"
    build_model(pdir / "model" / "colour.onnx")
    _write(pdir / "descriptor.json", {"mlModelDescriptor": {
        "envelopeVersion": "2021-01-01", "framework": "ONNX", "precisionMode": "FP32",
        "inputs": [{"name": "data", "shape": [1, 3, 32, 32]}],
        "onnx": {"asset": "colour.onnx"},
    }})
    _write(pdir / "package.json", _package("TRACKER_MODEL", [{
        "name": "model_asset",
        "implementations": [
            {"type": "model", "assetUri": "model", "descriptorUri": "descriptor.json"}
        ],
    }], [{
        "name": "interface", "category": "ml_model", "asset": "model_asset",
        "inputs": [{"name": "data", "type": "tensor"}],
        "outputs": [{"name": "scores", "type": "tensor"}],
    }]))


def _camera_package(app: Path, url: str, variant: str) -> str:
    """An older samples' own camera package: a system asset and input defaults.

    ``camera_template``: as panorama-cli's camera template wrote it, with no
    ``name``/``version`` (the package folder names them).
    """
    pdir = app / "packages" / f"{ACCOUNT}-LOBBY_CAMERA-1.0"
    package = _package("LOBBY_CAMERA", [{
        "name": "lobby_camera_asset",
        "implementations": [{
            "type": "system",
            "assetUri": "source/rtsp/media_source/rtsp_media_source.tar.gz",
        }],
    }], [{
        "name": "lobby_camera_interface", "category": "media_source",
        "asset": "lobby_camera_asset",
        "inputs": [
            {"name": "username", "type": "string", "default": "admin"},
            {"name": "password", "type": "string", "default": "not-a-secret"},
            {"name": "streamUrl", "type": "string", "default": url},
        ],
        "outputs": [{"description": "Video stream output", "name": "video_out", "type": "media"}],
    }])
    if variant == "camera_template":
        del package["nodePackage"]["name"], package["nodePackage"]["version"]
    _write(pdir / "package.json", package)
    return f"{ACCOUNT}::LOBBY_CAMERA.lobby_camera_interface"


def write_app(
    dest: Path, kind: str, variant: str = "plain", video: Path | None = None, device: str = "cpu"
) -> Path:
    """A ``tracker`` or ``ort_app`` application under ``dest/<kind>_<variant>``."""
    app = dest / f"{kind}_{variant}"
    packages = [f"{ACCOUNT}::{kind.upper()}_CODE", "panorama::hdmi_data_sink"]
    camera_iface = "panorama::abstract_rtsp_media_source.rtsp_v1_interface"
    if variant in ("camera_package", "camera_template"):
        camera_iface = _camera_package(app, str(video), variant)
        packages.append(f"{ACCOUNT}::LOBBY_CAMERA")
    else:
        packages.append("panorama::abstract_rtsp_media_source")
    nodes: list[dict[str, Any]] = [
        {"name": "code_node", "interface": f"{ACCOUNT}::{kind.upper()}_CODE.interface",
         "overridable": False, "launch": "onAppStart"},
        {"name": "front_door", "interface": camera_iface, "overridable": True,
         "launch": "onAppStart"},
        {"name": "output_node", "interface": "panorama::hdmi_data_sink.hdmi0",
         "overridable": True, "launch": "onAppStart"},
    ]
    edges = [
        {"producer": "front_door.video_out", "consumer": "code_node.video_in"},
        {"producer": "code_node.video_out", "consumer": "output_node.video_in"},
    ]
    if kind == "tracker":
        _code_package(app, kind, variant,
                      {"app.py": TRACKER_APP, "tracker_utils.py": TRACKER_UTILS})
        _model_package(app)
        packages.append(f"{ACCOUNT}::TRACKER_MODEL")
        nodes += [
            {"name": "model_node", "interface": f"{ACCOUNT}::TRACKER_MODEL.interface",
             "overridable": False, "launch": "onAppStart"},
            {"name": "min_score_param", "interface": "float32", "value": 0.5,
             "overridable": True},
        ]
        edges.append({"producer": "min_score_param", "consumer": "code_node.min_score"})
    else:
        _code_package(app, kind, variant, {
            "app.py": ORT_APP.format(infer=INFER_CUDA if device == "cuda" else INFER_CPU),
            "onnx_model/labels.txt": "\n".join(LABELS) + "\n",
        })
        src = app / "packages" / f"{ACCOUNT}-{kind.upper()}_CODE-1.0" / "src"
        build_model(src / "onnx_model" / "model.onnx")
    _write(app / "graphs" / app.name / "graph.json", {"nodeGraph": {
        "envelopeVersion": "2021-01-01",
        "packages": [{"name": name, "version": "1.0"} for name in packages],
        "nodes": nodes,
        "edges": edges,
    }})
    return app
