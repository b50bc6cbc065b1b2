"""The video-aware health gate: is a newly switched version fit to be committed?

Read from the runtime's own ``/health`` (JSON) and ``/metrics`` (Prometheus
text), on the port the supervisor gave it (``run/fleet/apps/<app>.json``).
The version passes when, held for ``window_s``:

* the runtime is up, at this version, and was not restarted during the window;
* no code node is crash-looping or failed;
* every camera in ``/health`` put out frames at ``min_fps`` or more over the
  window (frames out, counted by the runtime, divided by the window);
* every model's inference p95 stays under ``max_latency_ms``.

It waits up to ``startup_s`` for the runtime to answer ready first; a runtime
that keeps exiting fails at once (its second exit), not at the timeout.
GET /health and /metrics need no token (only POST does; ``http_token.py``).

>>> check(layout, "color", "1.1.0", HEALTH_DEFAULTS)["ok"]  # doctest: +SKIP
True
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from typing import Any

from fleet_runtime.apps import supervise
from fleet_runtime.layout import Layout

HTTP_TIMEOUT_S = 3.0
P95 = re.compile(r'^fleet_runtime_inference_ms\{model="([^"]*)",quantile="0\.95"\} (\S+)$', re.M)
CRASH_EXITS = 2  # runtime exits during the startup wait that count as crash-looping


class Unhealthy(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def check(layout: Layout, app: str, version: str, limits: dict[str, float]) -> dict[str, Any]:
    """The verdict: ``{"ok", "code", "reason", "fps", "latency_ms", "window_s"}``."""
    started = time.time()
    try:
        run = _wait_ready(layout, app, version, limits)
        fps, latency = _hold(layout, app, run, limits)
    except Unhealthy as exc:
        return {"ok": False, "code": exc.code, "reason": exc.reason, "at": time.time(),
                "started_at": started, "limits": limits}
    return {"ok": True, "code": "ok", "reason": "", "fps": fps, "latency_ms": latency,
            "window_s": limits["window_s"], "at": time.time(), "limits": limits}


def _wait_ready(layout: Layout, app: str, version: str, limits: dict[str, float]
                ) -> dict[str, Any]:
    """The supervisor's record once the runtime is ready and every camera has put out a
    frame; at `startup_s` a ready runtime whose cameras are silent goes to the window too
    (and fails there on its fps, with the camera's own error)."""
    deadline = time.monotonic() + limits["startup_s"]
    run: dict[str, Any] = {}
    ready = False
    while time.monotonic() < deadline:
        run = supervise.read_record(layout, app) or {}
        if run.get("version") == version and int(run.get("exits") or 0) >= CRASH_EXITS:
            raise Unhealthy("crash-loop", f"the runtime of {app} {version} exited "
                            f"{run['exits']} times (last: {run.get('last_exit')}); "
                            f"see {supervise.log_path(layout, app)}")
        doc = _health(run) if run.get("version") == version and run.get("child") and \
            run.get("port") else None
        ready = bool(doc and doc.get("ready"))
        if doc is not None and ready:
            _no_crash(doc)
            if all(int(c.get("frames_out") or 0) > 0 for c in (doc.get("cameras") or {}).values()):
                return run
        time.sleep(min(limits["poll_s"], 0.5))
    if ready:
        return run
    if run.get("version") != version or not run.get("child"):
        raise Unhealthy("not-running", f"no runtime of {app} {version} came up within "
                        f"{limits['startup_s']:g}s (is `fleet-agent app run {app}` running?)")
    raise Unhealthy("not-ready", f"the runtime of {app} {version} did not report ready "
                    f"within {limits['startup_s']:g}s")


def _hold(layout: Layout, app: str, run: dict[str, Any], limits: dict[str, float]
          ) -> tuple[dict[str, float], dict[str, float]]:
    first = _required(run)
    t0, end = time.monotonic(), time.monotonic() + limits["window_s"]
    latency: dict[str, float] = {}
    doc = first
    while True:
        now = supervise.read_record(layout, app) or {}
        if now.get("child") != run["child"]:
            raise Unhealthy("restarted", f"the runtime of {app} exited during the health "
                            f"window ({now.get('last_exit')}); see {supervise.log_path(layout, app)}")
        doc = _required(run)
        _no_crash(doc)
        latency = _latency(run, limits)
        if time.monotonic() >= end:
            break
        time.sleep(min(limits["poll_s"], max(end - time.monotonic(), 0.01)))
    return _fps(first, doc, time.monotonic() - t0, limits), latency


def _fps(first: dict[str, Any], last: dict[str, Any], seconds: float,
         limits: dict[str, float]) -> dict[str, float]:
    fps = {}
    for name, cam in (last.get("cameras") or {}).items():
        before = int(((first.get("cameras") or {}).get(name) or {}).get("frames_out", 0))
        fps[name] = round((int(cam.get("frames_out", 0)) - before) / max(seconds, 1e-6), 2)
    slow = {n: f for n, f in fps.items() if f < limits["min_fps"]}
    if slow:
        name, rate = sorted(slow.items())[0]
        error = ((last.get("cameras") or {}).get(name) or {}).get("last_error")
        raise Unhealthy("low-fps", f"camera {name} delivered {rate:g} fps over "
                        f"{seconds:.0f}s, under the minimum {limits['min_fps']:g}"
                        + (f" (camera: {error})" if error else "")
                        + (f" ({len(slow) - 1} more camera(s) too)" if len(slow) > 1 else ""))
    return fps


def _no_crash(doc: dict[str, Any]) -> None:
    for name, node in sorted((doc.get("nodes") or {}).items()):
        if node.get("state") in ("crash_loop", "failed"):
            raise Unhealthy("crash-loop", f"node {name} is {node['state']} "
                            f"({node.get('last_error')})")
    if doc.get("status") == "failed":
        raise Unhealthy("failed", "the runtime reports failed: " + "; ".join(doc.get("reasons") or []))


def _latency(run: dict[str, Any], limits: dict[str, float]) -> dict[str, float]:
    text = _get(run, "/metrics")
    if text is None:
        raise Unhealthy("no-metrics", f"the runtime's /metrics on port {run['port']} did not answer")
    p95 = {name: float(value) for name, value in P95.findall(text)}
    slow = {n: v for n, v in p95.items() if v > limits["max_latency_ms"]}
    if slow:
        name, value = sorted(slow.items())[0]
        raise Unhealthy("slow-inference", f"model {name}: inference p95 {value:g} ms, over the "
                        f"limit {limits['max_latency_ms']:g} ms")
    return p95


def _required(run: dict[str, Any]) -> dict[str, Any]:
    doc = _health(run)
    if doc is None:
        raise Unhealthy("no-health", f"the runtime's /health on port {run['port']} stopped answering")
    return doc


def _health(run: dict[str, Any]) -> dict[str, Any] | None:
    text = _get(run, "/health")
    try:
        doc = json.loads(text) if text is not None else None
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _get(run: dict[str, Any], route: str) -> str | None:
    """The body of GET `route` (a 503 /health still has its JSON), None when unreachable."""
    url = f"http://127.0.0.1:{int(run['port'])}{route}"
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as resp:  # noqa: S310 - loopback
            return str(resp.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode("utf-8", "replace"))
    except (OSError, ValueError):
        return None
