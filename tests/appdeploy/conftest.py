"""Fixtures for application deployment over a real lab: the colour classifier example with
its ONNX model built, and the RTSP test server as every device's camera."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS), str(TESTS / "rollout")]  # rtsp_server, labkit; lab_rollouts

from rtsp_server import rtsp_server  # noqa: E402,F401  (session fixture)

COLOR = TESTS.parent / "runtime" / "examples" / "color_classifier"
MODEL = "packages/123456789012-COLOR_MODEL-1.0/model/color.onnx"


@pytest.fixture(scope="session")
def color_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("cv2")
    app = tmp_path_factory.mktemp("apps") / "color_classifier"
    shutil.copytree(COLOR, app)
    sys.path.insert(0, str(app))
    try:
        from build_model import build
    finally:
        sys.path.remove(str(app))
        sys.modules.pop("build_model", None)
    build(app / MODEL)
    (app / "build_model.py").unlink()  # a build script, not part of the application
    return app
