"""/health on a CPU-only box: the CPU is healthy, dropped frames come with their reason."""

from __future__ import annotations

from typing import Any

from fleet_runtime.pipeline.inference import CPU, CUDA, ProviderReport
from fleet_runtime.pipeline.metrics import health


def _snap(report: ProviderReport, dropped: int) -> dict[str, Any]:
    return {
        "ready": True, "fps": 12.0, "nodes": {},
        "models": {"face_model": {"providers": report.as_dict()}},
        "cameras": {"camera_node": {"connected": True, "last_error": None, "frames_in": 232,
                                    "frames_dropped": dropped, "frames_out": 232 - dropped}},
    }


def test_cuda_asked_on_a_machine_without_a_gpu_is_healthy_and_said_plainly() -> None:
    doc = health(_snap(ProviderReport([CUDA, CPU], [CPU], [CPU], gpu_present=False), 0))
    assert doc["status"] == "ok" and doc["reasons"] == []
    assert doc["notes"] == [
        f"model face_model: running on CPU: this machine has no GPU ({CUDA} is used where one is)"
    ]


def test_a_gpu_machine_that_falls_back_is_degraded() -> None:
    doc = health(_snap(ProviderReport([CUDA, CPU], [CUDA, CPU], [CPU], gpu_present=True), 0))
    assert doc["status"] == "degraded" and "failed to load" in doc["reasons"][0]


def test_dropped_frames_are_reported_with_their_reason() -> None:
    doc = health(_snap(ProviderReport([CPU], [CPU], [CPU]), 170))
    assert doc["status"] == "ok"
    assert doc["notes"] == ["camera camera_node: dropped 170 of 232 frames because inference "
                            "is slower than the camera (the newest frames are kept)"]
