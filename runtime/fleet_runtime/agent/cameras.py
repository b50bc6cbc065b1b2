"""`fleet-agent cameras set -|list`: the device's camera credentials, sealed at rest.

The controller sends the registry's view of this device's cameras on stdin
(never in argv: argv shows in `ps` and in logs)::

    {"cameras": [{"name": "door", "url": "rtsp://10.0.0.7/s1?pw={password}",
                  "username": "admin", "password": "..."}]}

and `set` writes it to ``etc/fleet/cameras.json``, mode 0600, atomically
(temp, fsync, rename, fsync dir), replacing the whole file: the registry is the
one source. ``fleet-runtime run`` reads that file by default, so a camera node
that an application's override.json binds to camera NAMES finds its stream and
credentials there. Answers name the cameras, never a URL or a credential.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

from fleet_runtime.agent.protocol import EXIT_USAGE, AgentError
from fleet_runtime.durable import atomic_write
from fleet_runtime.layout import Layout

MAX_BYTES, MAX_CAMERAS = 1 << 20, 1024
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}\Z")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("cameras", help="the device's cameras file (etc/fleet/cameras.json)")
    verbs = p.add_subparsers(dest="verb", required=True)
    s = verbs.add_parser("set", help="replace cameras.json with the JSON on stdin (0600)")
    s.add_argument("source", choices=["-"], help="- : read the document from stdin")
    s.set_defaults(handler=run_set)
    ls = verbs.add_parser("list", help="the camera names in cameras.json (no credentials)")
    ls.set_defaults(handler=run_list)


def cameras_file(layout: Layout) -> Path:
    return layout.etc / "cameras.json"


def _bad(message: str) -> AgentError:
    return AgentError("bad-request", message, EXIT_USAGE)


def _entry_ok(cam: Any) -> bool:
    return (isinstance(cam, dict) and isinstance(cam.get("name"), str)
            and bool(_NAME.match(cam["name"])) and isinstance(cam.get("url"), str)
            and set(cam) <= {"name", "url", "username", "password"}
            and all(isinstance(cam.get(k), (str, type(None))) for k in ("username", "password")))


def parse(raw: bytes) -> list[dict[str, Any]]:
    """The cameras of a `set` document, checked; errors never quote a value."""
    if len(raw) > MAX_BYTES:
        raise _bad(f"the cameras document is over {MAX_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except ValueError:
        raise _bad("stdin is not a JSON document") from None
    cameras = doc.get("cameras") if isinstance(doc, dict) else None
    if not isinstance(cameras, list) or len(cameras) > MAX_CAMERAS:
        raise _bad(f'expected {{"cameras": [...]}} with at most {MAX_CAMERAS} cameras')
    for index, cam in enumerate(cameras):
        if not _entry_ok(cam):
            raise _bad(f"cameras[{index}]: needs a name (A-Z a-z 0-9 _ -) and a url, "
                       "text or null username and password, nothing else")
    names = [c["name"] for c in cameras]
    if len(set(names)) != len(names):
        raise _bad("a camera name appears twice")
    return list(cameras)


def run_set(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    cameras = parse(sys.stdin.buffer.read())
    data = (json.dumps({"cameras": cameras}, sort_keys=True, indent=1) + "\n").encode()
    path = cameras_file(layout)
    try:
        unchanged = path.read_bytes() == data and path.stat().st_mode & 0o077 == 0
    except OSError:
        unchanged = False
    if not unchanged:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data, mode=0o600)
    return {"cameras": sorted(c["name"] for c in cameras), "changed": not unchanged,
            "sha256": hashlib.sha256(data).hexdigest()}


def run_list(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    path = cameras_file(layout)
    if not path.is_file():
        return {"cameras": [], "mode": None}
    try:
        cameras = parse(path.read_bytes())
    except AgentError:
        raise AgentError("bad-cameras-file", f"{path} is not a valid cameras file") from None
    return {"cameras": sorted(c["name"] for c in cameras),
            "mode": oct(path.stat().st_mode & 0o777)}
