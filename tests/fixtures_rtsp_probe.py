"""A real RTSP server that demands Digest authentication, for the camera probe tests.

The shared ``rtsp_server`` fixture (tests/rtsp_server.py) serves Basic auth only;
this one runs the same gst-rtsp-server under the system Python with the
``/secure`` mount behind RTSP Digest (RFC 2617, MD5) instead, so the probe's
digest path is tested against a real server, not a scripted one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ci_skips import in_ci

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rtsp_server import (  # noqa: E402
    DEBIAN_PACKAGES,
    SYSTEM_PYTHON,
    RtspServer,
    _read_port,
    _stop,
    rtsp_available,
)

DIGEST_USER, DIGEST_PASSWORD = "operator", "d1gest-Pa55word"

_SERVER = r"""
import json, sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer

Gst.init(None)
config = json.loads(sys.argv[1])
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service("0")
auth = GstRtspServer.RTSPAuth()
auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
anonymous = GstRtspServer.RTSPToken()
anonymous.set_string("media.factory.role", "anonymous")
auth.set_default_token(anonymous)
user = GstRtspServer.RTSPToken()
user.set_string("media.factory.role", "user")
auth.add_digest(config["username"], config["password"], user)
server.set_auth(auth)
ALLOW = "media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch("( videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=15/1 "
                   "! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast "
                   "! rtph264pay name=pay0 pt=96 )")
factory.set_shared(True)
factory.add_role_from_structure(Gst.Structure.from_string("user, " + ALLOW)[0])
denied = ALLOW.replace("construct=(boolean)true", "construct=(boolean)false")
factory.add_role_from_structure(Gst.Structure.from_string("anonymous, " + denied)[0])
server.get_mount_points().add_factory("/secure", factory)
server.attach(None)
print(json.dumps({"port": server.get_bound_port()}), flush=True)
loop = GLib.MainLoop()
GLib.io_add_watch(sys.stdin, GLib.PRIORITY_DEFAULT, GLib.IO_IN | GLib.IO_HUP,
                  lambda *a: loop.quit())
loop.run()
"""


@pytest.fixture(scope="session")
def digest_rtsp_server() -> Iterator[RtspServer]:
    """gst-rtsp-server with ``/secure`` behind Digest auth (DIGEST_USER / DIGEST_PASSWORD)."""
    if not rtsp_available():
        missing = f"gst-rtsp-server missing: apt-get install {DEBIAN_PACKAGES}"
        if in_ci():
            pytest.fail(missing)
        pytest.skip(missing)
    config = {"username": DIGEST_USER, "password": DIGEST_PASSWORD}
    proc = subprocess.Popen(
        [SYSTEM_PYTHON, "-c", _SERVER, json.dumps(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "GST_DEBUG": "0"},
    )
    try:
        yield RtspServer(
            port=_read_port(proc),
            mounts=("secure",),
            username=DIGEST_USER,
            password=DIGEST_PASSWORD,
            process=proc,
        )
    finally:
        _stop(proc)
