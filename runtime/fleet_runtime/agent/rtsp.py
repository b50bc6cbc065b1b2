"""`fleet-agent rtsp-probe`: DESCRIBE cameras from the device's own network.

Cameras usually sit on a subnet only the appliance reaches (eth0 in Panorama's
dual-network layout), so the controller asks the device to probe them. The
request comes on stdin, never in argv (argv shows in `ps` and in logs)::

    {"timeout": 5, "cameras": [{"name": "door", "url": "rtsp://10.0.0.7/s1",
                                "username": "admin", "password": "..."}]}

and the answer is ``{"results": [{"name": "door", "status": "REACHABLE", "codec": "H264", ...}]}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fleet_runtime.agent.protocol import AgentError
from fleet_runtime.layout import Layout
from fleet_runtime.rtsp import probe

MAX_CAMERAS, MAX_WORKERS = 256, 16


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("rtsp-probe", help="RTSP DESCRIBE cameras (request as JSON on stdin)")
    p.set_defaults(handler=run)


def read_request(text: str) -> tuple[list[dict[str, Any]], float]:
    """The cameras and timeout from the stdin JSON, checked."""
    try:
        request = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise AgentError("bad-request", f"stdin is not JSON: {exc.msg}") from None
    cameras = request.get("cameras") if isinstance(request, dict) else None
    if not isinstance(cameras, list) or not cameras:
        raise AgentError("bad-request", 'expected {"cameras": [{"name", "url", ...}]} on stdin')
    if len(cameras) > MAX_CAMERAS:
        raise AgentError("bad-request", f"at most {MAX_CAMERAS} cameras per call")
    for cam in cameras:
        if not isinstance(cam, dict) or not isinstance(cam.get("url"), str):
            raise AgentError("bad-request", "every camera needs a url")
    timeout = request.get("timeout", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout != timeout:
        raise AgentError("bad-request", "timeout must be a number of seconds")
    return cameras, min(max(float(timeout), 0.1), 60.0)


def probe_one(cam: dict[str, Any], timeout: float) -> dict[str, Any]:
    result = probe(
        cam["url"], str(cam.get("username") or ""), str(cam.get("password") or ""), timeout=timeout
    )
    return {"name": cam.get("name"), **result.as_dict()}


def run(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    cameras, timeout = read_request(sys.stdin.read())
    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(cameras))) as pool:
        results = list(pool.map(lambda cam: probe_one(cam, timeout), cameras))
    return {"results": results}
