"""The face-blur example deployed across a lab fleet, each device with its own registry camera.

Must show (#16): on the lab (real sshd, a real RTSP server) the face-blur
example deployed in batches ``[1, "30%", "100%"]`` with per-device cameras
from the registry; each device's runtime /health shows its own cameras at or
above the minimum fps. Default size DEFAULT_SIZE devices; the must-show's 30
with ``EDGEFLEET_APP_FLEET=30`` (see tests/apps/applab.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")

from applab import HEALTH, AppLab, app_lab, camera_fps, face_blur, fleet_size, runtime_health  # noqa: E402
from labkit import run_cli  # noqa: E402

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    with app_lab(tmp_path_factory.mktemp("applab"), fleet_size()) as lab:
        yield lab


def test_face_blur_on_every_device_with_its_own_cameras(fleet: AppLab, tmp_path: Path) -> None:
    bundle = fleet.build(face_blur(tmp_path), "1.0.0")
    res = run_cli(fleet.root, *fleet.deploy_argv(bundle, "--batches", "1,30%,100%",
                                                 "--concurrency", "10"))
    doc = json.loads(res.stdout.splitlines()[-1])
    assert "report" in doc, (res.stdout, res.stderr[-3000:])
    report = doc["report"]
    names = fleet.names()
    assert res.exit_code == 0, res.stdout[-3000:]
    assert report["counts"] == {"succeeded": len(names)}, report
    assert [len(b) for b in report["batches"]] == _sizes(len(names)), report["batches"]
    for name in names:
        health = runtime_health(fleet.lab, name)
        assert health["ready"] and health["status"] in ("ok", "degraded"), (name, health)
        assert set(health["cameras"]) == {f"{name}-cam1"}, (name, health["cameras"])
        assert health["cameras"][f"{name}-cam1"]["connected"], (name, health["cameras"])
    measured = camera_fps(fleet.lab, names)
    print({name: round(fps[f"{name}-cam1"], 2) for name, fps in measured.items()})
    slow = {name: fps for name, fps in measured.items() if fps[f"{name}-cam1"] < HEALTH["min_fps"]}
    assert not slow, f"below {HEALTH['min_fps']} fps: {slow}"


def _sizes(total: int) -> list[int]:
    """Ansible's serial [1, "30%", "100%"]: one, then 30% of the fleet, then the rest."""
    second = max(1, int(total * 0.3))
    return [1, second, total - 1 - second]
