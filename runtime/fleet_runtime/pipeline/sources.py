"""Camera sources: RTSP (PyAV/FFmpeg), video files, image folders and a synthetic pattern.

Each source decodes on its own thread into a FrameQueue (drop-oldest when the
consumer falls behind, counted). RTSP sources use TCP transport, connect and
read timeouts, and reconnect with exponential backoff; credentials are put
into the URL only when opening and never appear in logs, health or errors.

>>> parse_source("door", "synthetic:320x240@10").kind
'synthetic'
>>> redact("rtsp://admin:pw@10.0.0.7/live")
'rtsp://***@10.0.0.7/live'
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from fleet_runtime.durable import Backoff
from fleet_runtime.pipeline.frames import Frame, FrameQueue
from fleet_runtime.rtsp import PASSWORD_PLACEHOLDER, fill_password

log = logging.getLogger("fleet_runtime.sources")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass
class SourceSpec:
    """What to open for one camera. ``realtime`` paces files to their frame rate."""

    name: str
    kind: str  # rtsp | file | images | synthetic
    uri: str = ""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    loop: bool = True
    realtime: bool = True
    drop: bool = True
    fps: float = 15.0
    size: tuple[int, int] = (640, 360)
    max_frames: int | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 5.0
    queue_size: int = 2


class SourceError(Exception):
    """A source failed to open or read (message already redacted)."""


def redact(url: str) -> str:
    """The URL without its credentials."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def with_credentials(url: str, username: str | None, password: str | None) -> str:
    """``url`` with ``username:password@`` (quoted) in place of any userinfo, and the
    password in place of a ``{password}`` URL parameter (see rtsp.fill_password)."""
    url = fill_password(url, password)
    if not username:
        return url
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    userinfo = quote(username, safe="") + (":" + quote(password, safe="") if password else "")
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))


def parse_source(name: str, uri: str) -> SourceSpec:
    """A SourceSpec from a command-line URI: rtsp://..., synthetic:WxH@FPS, a file or a folder."""
    if uri.startswith(("rtsp://", "rtsps://")):
        return SourceSpec(name, "rtsp", uri)
    synthetic = re.fullmatch(r"synthetic(?::(\d+)x(\d+))?(?:@([\d.]+))?", uri)
    if synthetic:
        w, h, fps = synthetic.groups()
        size = (int(w), int(h)) if w else (640, 360)
        return SourceSpec(name, "synthetic", uri, size=size, fps=float(fps or 15))
    path = Path(uri.removeprefix("file:"))
    if path.is_dir():
        return SourceSpec(name, "images", str(path))
    if path.is_file():
        return SourceSpec(name, "file", str(path))
    raise SourceError(
        f"camera {name!r}: {redact(uri)!r} is not an rtsp:// URL, synthetic:WxH@FPS,"
        " a video file or an image folder"
    )


@dataclass
class SourceStatus:
    connected: bool = False
    frames: int = 0
    reconnects: int = 0
    last_error: str | None = None
    finished: bool = False


class Source(threading.Thread):
    """Decodes one camera on its own thread into ``queue``; ``prepare`` runs on each frame."""

    def __init__(
        self,
        spec: SourceSpec,
        queue: FrameQueue[Frame],
        prepare: Callable[[Frame], None] | None = None,
    ) -> None:
        super().__init__(name=f"source-{spec.name}", daemon=True)
        self.spec = spec
        self.queue = queue
        self.prepare = prepare
        self.status = SourceStatus()
        self.stop_event = threading.Event()
        self._index = 0

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        try:
            self._run()
        finally:
            self.status.finished = True
            self.status.connected = False
            self.queue.close()

    def _run(self) -> None:
        backoff = Backoff(self.stop_event, first=0.5, cap=10.0)
        while not self.stop_event.is_set():
            try:
                for image in frames_of(self.spec, self.stop_event):
                    if self.stop_event.is_set():
                        # Stopped: leave now, not at the end of the stream (an RTSP camera's
                        # never comes, and the runtime's exit waited out its join timeout).
                        return
                    self.status.connected = True
                    backoff.reset()
                    if not self._emit(image):
                        return
            except SourceError as exc:
                self.status.connected = False
                self.status.last_error = str(exc)
                log.warning("camera %s: %s", self.spec.name, exc)
            if not self._should_reopen():
                return
            self.status.reconnects += 1
            backoff.wait()

    def _should_reopen(self) -> bool:
        if self.stop_event.is_set():
            return False
        return self.spec.kind == "rtsp" or self.spec.loop

    def _emit(self, image: Any) -> bool:
        """Queue one frame; False once max_frames is reached."""
        frame = Frame(self.spec.name, self._index, image)
        self._index += 1
        if self.prepare is not None:
            self.prepare(frame)
        self.queue.put(frame)
        self.status.frames += 1
        return self.spec.max_frames is None or self._index < self.spec.max_frames


def frames_of(spec: SourceSpec, stop: threading.Event) -> Iterator[Any]:
    """BGR frames of one pass over the source (an RTSP pass ends when the stream does)."""
    if spec.kind == "synthetic":
        return _synthetic(spec, stop)
    if spec.kind == "images":
        return _images(spec)
    if spec.kind in ("file", "rtsp"):
        return _video(spec)
    raise SourceError(f"camera {spec.name}: unknown source kind {spec.kind}")


def _paced(spec: SourceSpec) -> Callable[[float], None]:
    """A function that sleeps until ``offset`` seconds after the first call (when realtime)."""
    start: list[float] = []

    def wait(offset: float) -> None:
        if not spec.realtime:
            return
        if not start:
            start.append(time.monotonic() - offset)
        delay = start[0] + offset - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    return wait


def _synthetic(spec: SourceSpec, stop: threading.Event) -> Iterator[Any]:
    """A moving test pattern: colour bars with a bright square sweeping across."""
    import numpy as np

    w, h = spec.size
    bars = np.zeros((h, w, 3), np.uint8)
    colors = [
        (255, 255, 255),
        (0, 255, 255),
        (255, 255, 0),
        (0, 255, 0),
        (255, 0, 255),
        (0, 0, 255),
        (255, 0, 0),
    ]
    for i, color in enumerate(colors):
        bars[:, i * w // 7 : (i + 1) * w // 7] = color
    pace = _paced(spec)
    side = max(8, h // 4)
    for index in range(spec.max_frames or 2**62):
        if stop.is_set():
            return
        pace(index / spec.fps)
        image = bars.copy()
        x = (index * 7) % max(1, w - side)
        image[h // 2 - side // 2 : h // 2 + side // 2, x : x + side] = (index * 5) % 256
        yield image


def _images(spec: SourceSpec) -> Iterator[Any]:
    import cv2

    files = sorted(p for p in Path(spec.uri).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SourceError(f"camera {spec.name}: no images in {spec.uri}")
    pace = _paced(spec)
    for index, path in enumerate(files):
        pace(index / spec.fps)
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise SourceError(f"camera {spec.name}: cannot read {path.name}")
        yield image


def _open_options(spec: SourceSpec) -> dict[str, str]:
    if spec.kind != "rtsp":
        return {}
    # FFmpeg's rtsp "timeout" is the socket I/O timeout in microseconds. The stream is not
    # probed: the SDP of an RTSP session already describes it (codec, size, parameter
    # sets), and FFmpeg's probing reads up to 5 s of it, which held a camera's first frame
    # (and so a new version's health gate) back by 5 s at a low frame rate.
    return {"rtsp_transport": "tcp", "timeout": str(int(spec.read_timeout * 1e6)),
            "probesize": "32"}


# Up to 720p one decoder thread costs less CPU than FFmpeg's frame threads and keeps up
# at camera rates; above it frame threading is needed for real time.
SINGLE_THREAD_PIXELS = 1280 * 720


def _bgr(frame: Any) -> Any:
    """A decoded picture as BGR: I420 through OpenCV (half swscale's cost), else swscale."""
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        import cv2

        return cv2.cvtColor(frame.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2BGR_I420)
    return frame.to_ndarray(format="bgr24")


def _open(spec: SourceSpec) -> Any:
    import av

    url = (
        with_credentials(spec.uri, spec.username, spec.password)
        if spec.kind == "rtsp"
        else spec.uri
    )
    try:
        return av.open(
            url, options=_open_options(spec), timeout=(spec.connect_timeout, spec.read_timeout)
        )
    except (av.error.FFmpegError, OSError) as exc:
        raise SourceError(f"cannot open {redact(spec.uri)}: {_reason(exc, spec)}") from None


def _reason(exc: BaseException, spec: SourceSpec) -> str:
    text = str(exc)
    for secret in (spec.password, spec.username):
        if secret:
            text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
            text = text.replace(fill_password(PASSWORD_PLACEHOLDER, secret), "***")
    return re.sub(r"//[^/@\s]*@", "//***@", text)


def _video(spec: SourceSpec) -> Iterator[Any]:
    import av

    container = _open(spec)
    try:
        stream = container.streams.video[0]
        context = stream.codec_context
        if (context.width or 0) * (context.height or 0) > SINGLE_THREAD_PIXELS:
            stream.thread_type = "AUTO"  # frame threads pay off on big pictures only
        else:
            context.thread_count = 1
        pace = _paced(spec)
        for frame in container.decode(stream):
            if spec.kind == "file" and frame.time is not None:
                pace(float(frame.time))
            yield _bgr(frame)
    except (av.error.FFmpegError, OSError) as exc:
        raise SourceError(f"lost {redact(spec.uri)}: {_reason(exc, spec)}") from None
    finally:
        container.close()
