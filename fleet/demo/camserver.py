"""Cameras for the demo's application step: an RTSP server with one live mount per camera.

GStreamer's gst-rtsp-server under the system ``/usr/bin/python3`` (PyGObject
and the GStreamer introspection data come from Debian packages a virtualenv
cannot import; `scripts/system-deps.sh` installs them). It listens on
127.0.0.1 on a free port, asks for the camera user and password on every
mount (RTSP basic auth), and quits when our end of its stdin closes, so a
killed demo leaves no server behind. The configuration, password included,
reaches it on stdin, never on its command line.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

SYSTEM_PYTHON = "/usr/bin/python3"

_SERVER = r"""
import json, sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer

config = json.loads(sys.stdin.readline())
Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service("0")
auth = GstRtspServer.RTSPAuth()
token = GstRtspServer.RTSPToken()
token.set_string("media.factory.role", "viewer")
auth.add_basic(GstRtspServer.RTSPAuth.make_basic(config["username"], config["password"]), token)
server.set_auth(auth)
launch = ("( videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,"
          "framerate={fps}/1 ! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast "
          "key-int-max={fps} ! rtph264pay name=pay0 pt=96 config-interval=1 )").format(**config)
allow = "viewer, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
for path in config["mounts"]:
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)
    factory.add_role_from_structure(Gst.Structure.from_string(allow)[0])
    server.get_mount_points().add_factory("/" + path, factory)
server.attach(None)
print(json.dumps({"port": server.get_bound_port()}), flush=True)
loop = GLib.MainLoop()
GLib.io_add_watch(sys.stdin, GLib.PRIORITY_DEFAULT, GLib.IO_IN | GLib.IO_HUP, lambda *a: loop.quit())
loop.run()
"""


def missing() -> str | None:
    """Why the server cannot run here, or None."""
    probe = ('import gi; gi.require_version("GstRtspServer", "1.0"); '
             "from gi.repository import GstRtspServer")
    if not os.path.exists(SYSTEM_PYTHON) or subprocess.run(
            [SYSTEM_PYTHON, "-c", probe], capture_output=True).returncode != 0:
        return ("gst-rtsp-server is not installed (apt-get install gir1.2-gst-rtsp-server-1.0 "
                "python3-gi gstreamer1.0-plugins-ugly; scripts/system-deps.sh does it)")
    return None


@contextmanager
def camera_server(mounts: list[str], username: str, password: str,
                  fps: int = 2) -> Iterator[int]:
    """Serve a test pattern on each of `mounts` (``rtsp://127.0.0.1:PORT/MOUNT``); the port."""
    proc = subprocess.Popen([SYSTEM_PYTHON, "-c", _SERVER], stdin=subprocess.PIPE,  # noqa: S603
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(json.dumps({"mounts": mounts, "username": username,
                                     "password": password, "fps": fps}) + "\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError("the demo's RTSP camera server did not start")
        yield int(json.loads(line)["port"])
    finally:
        proc.stdin.close()  # the server quits when its stdin closes
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
