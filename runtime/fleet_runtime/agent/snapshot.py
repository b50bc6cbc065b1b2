"""`fleet-agent snapshot --camera NAME`: a JPEG of the camera's latest output frame.

The frame comes from the running application's own local HTTP server
(``/frame.jpg``, the image after the application's processing: faces already
blurred when the application blurs them), found through ``run/fleet/runtime.json``
and each application's ``/health`` camera list. Nothing new listens on the
network: the controller reaches this command the way it reaches every other,
over the device's pinned SSH, and gets the JPEG base64-encoded in the one JSON answer.
"""

from __future__ import annotations

import argparse
import base64
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from fleet_runtime.agent.health import RUNTIME_TIMEOUT_S, fetch_health, runtime_ports
from fleet_runtime.agent.protocol import AgentError
from fleet_runtime.layout import Layout

MAX_JPEG_BYTES = 8 * 1024 * 1024


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("snapshot", help="a JPEG of a camera's latest processed frame (base64)")
    p.add_argument("--camera", required=True, help="camera (stream) name")
    p.set_defaults(handler=run)


def _apps_with_camera(layout: Layout, camera: str) -> tuple[list[tuple[str, int]], list[str]]:
    """(app, port) of the applications streaming `camera`, and every camera seen."""
    found: list[tuple[str, int]] = []
    seen: list[str] = []
    for app, port in sorted(runtime_ports(layout).items()):
        try:
            cameras = fetch_health(port).get("cameras") or {}
        except (OSError, ValueError):
            continue  # an application that does not answer has no frame to give
        seen.extend(str(c) for c in cameras)
        if camera in cameras:
            found.append((app, port))
    return found, seen


def _frame(port: int, camera: str) -> bytes:
    query = urllib.parse.urlencode({"camera": camera})
    url = f"http://127.0.0.1:{port}/frame.jpg?{query}"
    try:
        with urllib.request.urlopen(url, timeout=RUNTIME_TIMEOUT_S + 5) as resp:  # noqa: S310
            return bytes(resp.read(MAX_JPEG_BYTES + 1))
    except urllib.error.HTTPError as exc:
        raise AgentError("no-frame", f"camera {camera}: no frame yet (HTTP {exc.code})") from None
    except OSError as exc:
        raise AgentError("no-frame", f"camera {camera}: runtime not answering ({exc})") from None


def run(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    camera = str(args.camera)
    apps, seen = _apps_with_camera(layout, camera)
    if not apps:
        streaming = ", ".join(sorted(seen)) or "none"
        raise AgentError("no-camera", f"camera {camera} is not streaming in any running "
                         f"application (streaming: {streaming})")
    app, port = apps[0]
    jpeg = _frame(port, camera)
    if len(jpeg) > MAX_JPEG_BYTES or not jpeg.startswith(b"\xff\xd8"):
        raise AgentError("bad-frame", f"camera {camera}: the runtime's answer is not a JPEG "
                         f"of at most {MAX_JPEG_BYTES} bytes")
    return {"camera": camera, "app": app, "bytes": len(jpeg),
            "jpeg_base64": base64.b64encode(jpeg).decode("ascii")}
