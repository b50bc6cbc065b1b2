"""A real RTSP server for tests: GStreamer's gst-rtsp-server in a subprocess.

The server runs under the system ``/usr/bin/python3`` (it needs PyGObject and
the GStreamer introspection data from Debian, which a virtualenv cannot
import): ``gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base
gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
gstreamer1.0-libav``. It listens on 127.0.0.1 on a free port and quits when
the test process closes its stdin (so a killed pytest leaves no orphan).

Mounts of the session fixture ``rtsp_server`` (320x240, 15 fps test pattern):

* ``/test``   H.264 (``server.h264_url``)
* ``/h265``   H.265 (``server.h265_url``; None when x265enc is missing)
* ``/secure`` H.264 behind RTSP basic auth: ``server.secure_url`` carries
  the credentials, ``server.url("secure")`` does not (DESCRIBE answers 401).
  Credentials: ``server.username`` / ``server.password``.
* any other path answers ``404 Not Found`` to DESCRIBE.

Use it from a test module or conftest::

    import sys, pathlib
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # tests/
    from rtsp_server import rtsp_server  # noqa: F401  (the session fixture)

    def test_probe(rtsp_server):
        probe(rtsp_server.h264_url)

For many cameras (a lab fleet with its own camera per device), ``patterns``
adds one live test-pattern mount per name, at ``pattern_fps`` frames a second
(kept low: every mount a client opens is one encoder on the machine)::

    with start_rtsp_server(patterns=["berlin-01/cam1", "berlin-02/cam1"]) as server:
        url = server.url("berlin-01/cam1")

To serve your own video (an MP4/MKV with an H.264 track, sent as is without
re-encoding; every client that connects gets the file from the start and the
stream ends at its end), start another server::

    with start_rtsp_server(files={"face": video_path}) as server:
        url = server.url("face")

``rtsp_available()`` says whether the Debian packages are installed; the
fixture skips with the install line when they are not (and fails under
``CI=true``, so a missing install step cannot hide behind a skip).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from ci_skips import in_ci

SYSTEM_PYTHON = "/usr/bin/python3"
DEBIAN_PACKAGES = (
    "gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
    "gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav"
)
USERNAME = "viewer"
PASSWORD = "s3cret-Pa55"  # test-only credential of the test server

_CAPS = "video/x-raw,width=320,height=240,framerate=15/1"
_H264 = (
    f"( videotestsrc is-live=true pattern=ball ! {_CAPS} ! videoconvert ! "
    "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! "
    "rtph264pay name=pay0 pt=96 config-interval=1 )"
)
_H265 = (
    f"( videotestsrc is-live=true pattern=smpte ! {_CAPS} ! videoconvert ! "
    "x265enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! "
    "rtph265pay name=pay0 pt=96 config-interval=1 )"
)

# Runs under /usr/bin/python3; argv[1] is a JSON config {"mounts": [...], "auth": {...}}.
_SERVER = r"""
import json, sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer

Gst.init(None)
config = json.loads(sys.argv[1])
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service("0")
auth = GstRtspServer.RTSPAuth()
anonymous = GstRtspServer.RTSPToken()
anonymous.set_string("media.factory.role", "anonymous")
auth.set_default_token(anonymous)
user = GstRtspServer.RTSPToken()
user.set_string("media.factory.role", "user")
auth.add_basic(GstRtspServer.RTSPAuth.make_basic(config["username"], config["password"]), user)
server.set_auth(auth)
ALLOW = "media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
mounts = server.get_mount_points()
for mount in config["mounts"]:
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(mount["launch"])
    factory.set_shared(mount["shared"])
    factory.add_role_from_structure(Gst.Structure.from_string("user, " + ALLOW)[0])
    # A secure mount lets anonymous clients find it but not construct it: they get
    # 401 with a Basic challenge (a mount they could not access would answer 404).
    anonymous = ALLOW.replace("construct=(boolean)true", "construct=(boolean)false")
    if not mount["secure"]:
        anonymous = ALLOW
    factory.add_role_from_structure(Gst.Structure.from_string("anonymous, " + anonymous)[0])
    mounts.add_factory("/" + mount["path"], factory)
server.attach(None)
print(json.dumps({"port": server.get_bound_port()}), flush=True)
loop = GLib.MainLoop()
GLib.io_add_watch(sys.stdin, GLib.PRIORITY_DEFAULT, GLib.IO_IN | GLib.IO_HUP,
                  lambda *a: loop.quit())
loop.run()
"""


@dataclass
class RtspServer:
    """A running test RTSP server; URLs are on 127.0.0.1."""

    port: int
    mounts: tuple[str, ...]
    username: str = USERNAME
    password: str = PASSWORD
    process: subprocess.Popen[str] | None = field(default=None, repr=False)

    def url(self, mount: str = "test", *, credentials: bool = False) -> str:
        """``rtsp://127.0.0.1:PORT/MOUNT``, with ``user:password@`` when asked."""
        userinfo = f"{self.username}:{self.password}@" if credentials else ""
        return f"rtsp://{userinfo}127.0.0.1:{self.port}/{mount}"

    @property
    def h264_url(self) -> str:
        return self.url("test")

    @property
    def h265_url(self) -> str | None:
        return self.url("h265") if "h265" in self.mounts else None

    @property
    def secure_url(self) -> str:
        return self.url("secure", credentials=True)


def rtsp_available() -> bool:
    """True when the system Python can import gst-rtsp-server."""
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    probe = (
        'import gi; gi.require_version("GstRtspServer", "1.0");'
        " from gi.repository import GstRtspServer"
    )
    return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True).returncode == 0


def _has_element(name: str) -> bool:
    inspect = shutil.which("gst-inspect-1.0")
    if inspect is None:
        return True  # cannot tell; the pipeline will say
    return subprocess.run([inspect, name], capture_output=True).returncode == 0


def _file_launch(path: Path) -> str:
    demux = "matroskademux" if path.suffix.lower() in (".mkv", ".webm") else "qtdemux"
    return (
        f'( filesrc location="{path}" ! {demux} ! h264parse config-interval=-1 ! '
        "rtph264pay name=pay0 pt=96 )"
    )


def _pattern_launch(fps: int) -> str:
    caps = f"video/x-raw,width=320,height=240,framerate={fps}/1"
    return _H264.replace(_CAPS, caps).replace("key-int-max=15", f"key-int-max={fps}")


def _mounts(files: dict[str, Path] | None, h265: bool, patterns: Sequence[str] = (),
            pattern_fps: int = 5) -> list[dict[str, object]]:
    mounts: list[dict[str, object]] = [
        {"path": "test", "launch": _H264, "shared": True, "secure": False},
        {"path": "secure", "launch": _H264, "shared": True, "secure": True},
    ]
    if h265 and _has_element("x265enc"):
        mounts.append({"path": "h265", "launch": _H265, "shared": True, "secure": False})
    for name, path in (files or {}).items():
        launch = _file_launch(Path(path).resolve())
        mounts.append({"path": name, "launch": launch, "shared": False, "secure": False})
    for name in patterns:
        mounts.append({"path": name, "launch": _pattern_launch(pattern_fps), "shared": True,
                       "secure": False})
    return mounts


def _read_port(proc: subprocess.Popen[str], timeout: float = 20.0) -> int:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"gst-rtsp-server did not start: {err.strip()[-500:]}")
    return int(json.loads(line)["port"])


@contextmanager
def start_rtsp_server(
    files: dict[str, Path] | None = None, *, h265: bool = True, patterns: Sequence[str] = (),
    pattern_fps: int = 5,
) -> Iterator[RtspServer]:
    """Start a server with the standard mounts plus ``files`` (mount -> video path) and a
    live test pattern on each of ``patterns`` (mount names) at ``pattern_fps``."""
    mounts = _mounts(files, h265, patterns, pattern_fps)
    config = {"mounts": mounts, "username": USERNAME, "password": PASSWORD}
    proc = subprocess.Popen(
        [SYSTEM_PYTHON, "-c", _SERVER, json.dumps(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "GST_DEBUG": os.environ.get("GST_DEBUG", "0")},
    )
    try:
        port = _read_port(proc)
        names = tuple(str(m["path"]) for m in mounts)
        yield RtspServer(port=port, mounts=names, process=proc)
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.stdin:
        proc.stdin.close()  # the server quits on stdin hang-up
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


@pytest.fixture(scope="session")
def rtsp_server() -> Iterator[RtspServer]:
    """Session-wide RTSP server with /test (H.264), /h265 and /secure (basic auth)."""
    if not rtsp_available():
        missing = f"gst-rtsp-server missing: apt-get install {DEBIAN_PACKAGES}"
        if in_ci():
            pytest.fail(missing)  # CI must not go green by skipping the real server
        pytest.skip(missing)
    with start_rtsp_server() as server:
        yield server
