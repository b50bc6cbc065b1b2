"""The override.json documents runtime tests write (Panorama's ``nodeGraphOverrides``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def override_doc(cameras: list[str], threshold: float | None = None) -> dict[str, Any]:
    """``camera_node`` bound to ``cameras``; with ``threshold``, ``threshold_param`` set to it."""
    doc: dict[str, Any] = {
        "nodeGraphOverrides": {
            "envelopeVersion": "2021-01-01",
            "nodes": [],
            "nodeOverrides": [{"replace": "camera_node", "with": [{"name": c} for c in cameras]}],
        }
    }
    if threshold is not None:
        doc["nodeGraphOverrides"]["nodes"].append(
            {"name": "strict", "interface": "float32", "value": threshold}
        )
        doc["nodeGraphOverrides"]["nodeOverrides"].append(
            {"replace": "threshold_param", "with": [{"name": "strict"}]}
        )
    return doc


def write_override(path: Path, cameras: list[str], threshold: float | None = None) -> Path:
    path.write_text(json.dumps(override_doc(cameras, threshold)))
    return path
