"""`fleet-agent rtsp-probe`: the request on stdin, one JSON answer, every camera classified."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from rtsp_server import RtspServer

AGENT = str(Path(sys.executable).parent / "fleet-agent")


def agent(stdin: str, root: Path) -> tuple[int, dict]:  # type: ignore[type-arg]
    proc = subprocess.run([AGENT, "rtsp-probe"], input=stdin, capture_output=True, text=True,
                          env={"FLEET_ROOT": str(root), "PATH": "/usr/bin:/bin"}, timeout=60)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    return proc.returncode, json.loads(lines[0])


@pytest.mark.parametrize("stdin", ["", "not json", '{"cameras": []}', '{"cameras": [{"name": 1}]}'])
def test_bad_requests_are_error_objects(tmp_path: Path, stdin: str) -> None:
    rc, answer = agent(stdin, tmp_path)
    assert rc == 1 and answer["error"]["code"] == "bad-request"


def test_probes_every_camera_and_never_echoes_the_password(
    tmp_path: Path,
    rtsp_server: RtspServer,
) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        closed = f"rtsp://127.0.0.1:{free.getsockname()[1]}/x"
    request = {"timeout": 2, "cameras": [
        {"name": "ok", "url": rtsp_server.h264_url},
        {"name": "locked", "url": rtsp_server.url("secure"), "username": rtsp_server.username,
         "password": rtsp_server.password},
        {"name": "wrong", "url": rtsp_server.url("secure"), "username": "viewer",
         "password": "Agent-Planted-91"},
        {"name": "gone", "url": closed},
    ]}
    rc, answer = agent(json.dumps(request), tmp_path)
    assert rc == 0 and answer["ok"]
    got = {r["name"]: r["status"] for r in answer["results"]}
    assert got == {"ok": "REACHABLE", "locked": "REACHABLE", "wrong": "AUTH_FAILED",
                   "gone": "UNREACHABLE"}
    text = json.dumps(answer)
    assert "Agent-Planted-91" not in text and rtsp_server.password not in text
