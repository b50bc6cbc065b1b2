"""Runtime counters and their Prometheus text exposition (format 0.0.4).

The runner keeps a ``Counters`` and builds a snapshot dict; ``render`` turns
the snapshot into /metrics text and ``health`` into the /health document.

>>> snap = {"cameras": {}, "models": {}, "nodes": {}, "fps": 0.0, "ready": True}
>>> print(render(snap).splitlines()[0])
# HELP fleet_runtime_ready 1 when every model is warmed up and the application is running.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any


class Counters:
    """Thread-safe per-camera output counts, per-node errors, and a recent fps window."""

    def __init__(self, window: float = 5.0) -> None:
        self._lock = threading.Lock()
        self.frames_out: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self._stamps: deque[float] = deque()
        self._window = window

    def frame_out(self, camera: str) -> None:
        now = time.monotonic()
        with self._lock:
            self.frames_out[camera] = self.frames_out.get(camera, 0) + 1
            self._stamps.append(now)
            while self._stamps and now - self._stamps[0] > self._window:
                self._stamps.popleft()

    def error(self, node: str) -> None:
        with self._lock:
            self.errors[node] = self.errors.get(node, 0) + 1

    def fps(self) -> float:
        """Frames out per second over the last window (all cameras)."""
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._stamps if now - t <= self._window]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, Any]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


class _Text:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self, name: str, kind: str, help_text: str, samples: list[tuple[dict[str, Any], float]]
    ) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def raw(self, line: str) -> None:
        self.lines.append(line)


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def render(snap: dict[str, Any]) -> str:
    """Prometheus text for a runner snapshot."""
    out = _Text()
    out.family(
        "fleet_runtime_ready",
        "gauge",
        "1 when every model is warmed up and the application is running.",
        [({}, 1 if snap["ready"] else 0)],
    )
    _camera_metrics(out, snap["cameras"])
    _model_metrics(out, snap["models"])
    _node_metrics(out, snap["nodes"])
    out.family(
        "fleet_runtime_fps",
        "gauge",
        "Frames out per second over the last 5 s, all cameras.",
        [({}, snap["fps"])],
    )
    return "\n".join(out.lines) + "\n"


def _camera_metrics(out: _Text, cameras: dict[str, Any]) -> None:
    for key, kind, text in (
        ("frames_in", "counter", "Frames decoded per camera."),
        (
            "frames_dropped",
            "counter",
            "Frames dropped per camera because inference fell behind (queue full).",
        ),
        ("frames_out", "counter", "Frames the application put out per camera."),
        ("reconnects", "counter", "Times the camera was reopened."),
    ):
        out.family(
            f"fleet_runtime_{key}_total",
            kind,
            text,
            [({"camera": n}, c[key]) for n, c in cameras.items()],
        )
    out.family(
        "fleet_runtime_camera_connected",
        "gauge",
        "1 while the camera stream is open.",
        [({"camera": n}, 1 if c["connected"] else 0) for n, c in cameras.items()],
    )


def _model_metrics(out: _Text, models: dict[str, Any]) -> None:
    out.raw("# HELP fleet_runtime_inference_ms Inference latency per run (milliseconds).")
    out.raw("# TYPE fleet_runtime_inference_ms summary")
    for name, m in models.items():
        for q, key in (("0.5", "p50"), ("0.95", "p95")):
            out.raw(
                f"fleet_runtime_inference_ms{_labels({'model': name, 'quantile': q})}"
                f" {_number(m[key])}"
            )
        out.raw(
            f"fleet_runtime_inference_ms_sum{_labels({'model': name})} {_number(m['total_ms'])}"
        )
        out.raw(f"fleet_runtime_inference_ms_count{_labels({'model': name})} {m['runs']}")
    out.family(
        "fleet_runtime_provider_info",
        "gauge",
        "Execution provider in use per model (active), and the one asked for (requested).",
        [
            (
                {
                    "model": n,
                    "active": m["providers"]["primary"],
                    "requested": m["providers"]["requested"][0],
                },
                1,
            )
            for n, m in models.items()
        ],
    )
    out.family(
        "fleet_runtime_provider_fallback",
        "gauge",
        "1 when the requested execution provider did not load and the model runs on another.",
        [({"model": n}, 1 if m["providers"]["fallback"] else 0) for n, m in models.items()],
    )


def _node_metrics(out: _Text, nodes: dict[str, Any]) -> None:
    out.family(
        "fleet_runtime_errors_total",
        "counter",
        "Exceptions raised by application code, per node.",
        [({"node": n}, s["errors"]) for n, s in nodes.items()],
    )
    out.family(
        "fleet_runtime_restarts_total",
        "counter",
        "Times a code node was restarted after a crash.",
        [({"node": n}, s["restarts"]) for n, s in nodes.items()],
    )
    out.family(
        "fleet_runtime_crash_loop",
        "gauge",
        "1 while a code node keeps crashing.",
        [({"node": n}, 1 if s["state"] == "crash_loop" else 0) for n, s in nodes.items()],
    )


def notes(snap: dict[str, Any]) -> list[str]:
    """What a person should know that is not a fault: the CPU on a machine without a GPU,
    and frames dropped because inference is slower than the camera (newest frames win)."""
    said = [f"model {n}: {m['providers']['note']}" for n, m in snap["models"].items()
            if m["providers"].get("note")]
    for name, cam in snap["cameras"].items():
        dropped, seen = cam["frames_dropped"], cam["frames_in"]
        if dropped:
            said.append(f"camera {name}: dropped {dropped} of {seen} frames because inference "
                        "is slower than the camera (the newest frames are kept)")
    return said


def health(snap: dict[str, Any]) -> dict[str, Any]:
    """The /health document: status ok | degraded | starting | failed, with reasons
    (why not ok) and notes (worth knowing, not a fault)."""
    reasons = [
        f"model {n}: {m['providers']['warning']}"
        for n, m in snap["models"].items()
        if m["providers"]["warning"]
    ]
    reasons += [
        f"node {n}: {s['state']} ({s['last_error']})"
        for n, s in snap["nodes"].items()
        if s["state"] in ("crash_loop", "restarting", "failed")
    ]
    reasons += [
        f"camera {n}: {c['last_error']}"
        for n, c in snap["cameras"].items()
        if not c["connected"] and c["last_error"]
    ]
    if any(s["state"] == "failed" for s in snap["nodes"].values()):
        status = "failed"
    elif not snap["ready"]:
        status = "starting"
    else:
        status = "degraded" if reasons else "ok"
    return {
        "status": status,
        "ready": snap["ready"],
        "reasons": reasons,
        "notes": notes(snap),
        "fps": round(snap["fps"], 2),
        "providers": {n: m["providers"] for n, m in snap["models"].items()},
        "nodes": snap["nodes"],
        "cameras": snap["cameras"],
    }
