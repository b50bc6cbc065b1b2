"""The device's application settings: ``etc/fleet/apps.json``, every key optional.

>>> load(Layout(Path("/nonexistent")))["keep_versions"]
2
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleet_runtime.layout import Layout, read_json

# Health thresholds a version is held to before it is committed (a release's own
# ``health`` object, then apps.json's ``health``, then these).
HEALTH_DEFAULTS: dict[str, float] = {
    "window_s": 30.0,  # how long every check must hold
    "min_fps": 1.0,  # frames out per second, per bound camera, over the window
    "max_latency_ms": 1000.0,  # inference p95 per model
    "startup_s": 120.0,  # from the switch to the runtime answering ready
    "poll_s": 1.0,  # how often the window is sampled
}
DEFAULTS: dict[str, Any] = {
    "keep_versions": 2,  # committed versions kept per app (the current one included)
    "reserve_bytes": 256 << 20,  # free space a blob may never eat into
    "gc_grace_s": 3600.0,  # unreferenced blobs younger than this survive gc (sent, not staged yet)
    "restart_first_s": 1.0,  # supervisor backoff after a runtime exit, growing to the cap
    "restart_cap_s": 60.0,
    "health": HEALTH_DEFAULTS,
}


class SettingsError(ValueError):
    """apps.json holds a key of the wrong type (names the file and key)."""


def path(layout: Layout) -> Path:
    return layout.etc / "apps.json"


def load(layout: Layout) -> dict[str, Any]:
    """DEFAULTS overlaid with apps.json; SettingsError for a value that is not a number."""
    doc = read_json(path(layout), default={}) or {}
    if not isinstance(doc, dict):
        raise SettingsError(f"{path(layout)}: expected a JSON object")
    out = {**DEFAULTS, **{k: v for k, v in doc.items() if k in DEFAULTS}}
    out["health"] = health(doc.get("health") or {}, f"{path(layout)}: health")
    for key in DEFAULTS:
        if key != "health" and not _number(out[key]):
            raise SettingsError(f"{path(layout)}: {key} must be a number >= 0")
    out["keep_versions"] = max(int(out["keep_versions"]), 1)
    return out


def health(overrides: Any, where: str, base: dict[str, float] | None = None) -> dict[str, float]:
    """Thresholds: `base` (the defaults) with `overrides` checked key by key."""
    if not isinstance(overrides, dict):
        raise SettingsError(f"{where}: expected an object of thresholds")
    out = dict(base or HEALTH_DEFAULTS)
    for key, value in overrides.items():
        if key not in HEALTH_DEFAULTS or not _number(value):
            raise SettingsError(f"{where}.{key}: expected one of {sorted(HEALTH_DEFAULTS)} "
                                "with a number >= 0")
        out[key] = float(value)
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
