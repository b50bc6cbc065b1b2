"""Where results go: the local HTTP server (MJPEG, /metrics, /health), JSONL events, video files.

The MJPEG stream replaces Panorama's HDMI output. JPEG encoding happens only
when someone is watching, once per frame whatever the number of viewers.

Routes: ``/`` (index), ``/video?camera=NAME`` (multipart/x-mixed-replace
MJPEG), ``/frame.jpg?camera=NAME`` (the latest frame), ``/metrics``
(Prometheus text), ``/health`` (JSON; 200 when ok or degraded, 503 otherwise),
``POST /signal`` (needs ``Authorization: Bearer <token>``, see
``fleet_runtime.http_token``). Requests whose ``Origin`` is another site are
refused, connections are capped and an idle one is closed after ``idle_timeout``.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socket import socket
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("fleet_runtime.sinks")
BOUNDARY = "fleetframe"


class OutputHub:
    """The latest output frame of each camera, JPEG-encoded on demand and cached per frame."""

    def __init__(self, quality: int = 80) -> None:
        self._cond = threading.Condition()
        self._frames: dict[str, tuple[int, Any]] = {}
        self._jpegs: dict[str, tuple[int, bytes]] = {}
        self._seq = 0
        self.quality = quality

    def publish(self, camera: str, image: Any) -> None:
        with self._cond:
            self._seq += 1
            self._frames[camera] = (self._seq, image)
            self._cond.notify_all()

    def cameras(self) -> list[str]:
        with self._cond:
            return sorted(self._frames)

    def jpeg(
        self, camera: str | None, after: int = 0, timeout: float = 5.0
    ) -> tuple[int, bytes] | None:
        """(sequence, JPEG) of a frame newer than ``after``; None if none within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                name = camera or (min(self._frames) if self._frames else None)
                current = self._frames.get(name) if name else None
                if current and current[0] > after:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            cached = self._jpegs.get(name)  # type: ignore[arg-type]
            if cached and cached[0] == current[0]:
                return cached
        encoded = (current[0], _encode(current[1], self.quality))
        with self._cond:
            self._jpegs[name] = encoded  # type: ignore[index]
        return encoded


def _encode(image: Any, quality: int) -> bytes:
    import cv2

    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(data)


class EventLog:
    """Append-only JSONL file of detections and application events (one object per line)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", buffering=1)

    def write(self, kind: str, **fields: Any) -> None:
        if self._file is None:
            return
        line = json.dumps({"time": round(time.time(), 3), "event": kind, **fields}, default=str)
        with self._lock:
            self._file.write(line + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class VideoWriter(threading.Thread):
    """Encodes output frames to a video file on its own thread (H.264 by default)."""

    def __init__(
        self,
        path: Path,
        fps: float = 15.0,
        codec: str = "libx264",
        options: dict[str, str] | None = None,
    ) -> None:
        super().__init__(name="video-writer", daemon=True)
        self.path, self.fps, self.codec = path, fps, codec
        self.options = options or {}
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=8)
        self.frames = 0

    def write(self, image: Any) -> None:
        self._queue.put(image)

    def close(self) -> None:
        self._queue.put(None)
        self.join()

    def run(self) -> None:
        import av

        container = av.open(str(self.path), "w")
        stream: Any = None
        while (image := self._queue.get()) is not None:
            if stream is None:
                stream = container.add_stream(self.codec, rate=round(self.fps))
                stream.height, stream.width = image.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = self.options
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
            self.frames += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
        container.close()


Snapshot = Callable[[], dict[str, Any]]
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_CONNECTIONS = 64  # MJPEG viewers, scrapers and agents together; one thread each
IDLE_TIMEOUT = 30.0  # seconds a connection may send nothing (or accept nothing) before it is closed
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _BoundedServer(ThreadingHTTPServer):
    """One thread per connection, at most `max_connections`: the next ones get a 503 at once."""

    daemon_threads = True
    request_queue_size = 128  # a burst of connections is answered (503) rather than left waiting

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 max_connections: int) -> None:
        self.slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            _refuse_busy(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()  # no thread started, so nobody else frees the slot
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # ThreadingMixIn's body, with the slot freed *before* the socket closes: a client
        # that sees its connection end may connect again at once and must find the slot free.
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - as socketserver does: log it, close the connection
            self.handle_error(request, client_address)
        finally:
            self.slots.release()
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("http: connection from %s ended with an error", client_address, exc_info=True)


def _host_name(host: str) -> str | None:
    """``"127.0.0.1:8080"`` -> ``"127.0.0.1"``; None for no name or one that does not parse."""
    try:
        return urlsplit(f"//{host}").hostname
    except ValueError:
        return None


def _refuse_busy(request: socket) -> None:
    try:
        request.setblocking(False)  # the accept loop must never wait on a client
        request.send(_BUSY)
    except OSError:
        pass


class _HeadDeadline(io.RawIOBase):
    """The connection's reading side; while a request head is awaited, it must arrive by a deadline.

    A client trickling its head a byte at a time never idles, so the idle timeout
    alone let 64 such clients hold every slot for ever (slowloris). Each receive
    waits at most the time left; past the deadline it raises TimeoutError, which
    the stdlib handler answers by closing the connection.
    """

    def __init__(self, sock: socket, idle: float) -> None:
        super().__init__()
        self.sock, self.idle = sock, idle
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request head did not arrive in time")
            self.sock.settimeout(min(left, self.idle))
        return self.sock.recv_into(buffer)


class HttpServer:
    """The runtime's local HTTP endpoint; ``start`` binds, ``port`` is the bound port."""

    def __init__(
        self,
        hub: OutputHub,
        metrics_text: Callable[[], str],
        health_doc: Callable[[], dict[str, Any]],
        host: str = "127.0.0.1",
        port: int = 0,
        signal: Callable[[str, str], None] | None = None,
        token: str | None = None,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        """`token` guards POST /signal; without one the endpoint refuses every request."""
        self.closing = threading.Event()
        handler = type(
            "Handler",
            (_Handler,),
            {
                "hub": hub,
                "metrics_text": staticmethod(metrics_text),
                "health_doc": staticmethod(health_doc),
                "signal_node": staticmethod(signal) if signal else None,
                "closing": self.closing,
                "token": token,
                "loopback_only": host in LOOPBACK,
                "timeout": idle_timeout,
            },
        )
        self.server = _BoundedServer((host, port), handler, max_connections)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    hub: OutputHub
    metrics_text: Callable[[], str]
    health_doc: Callable[[], dict[str, Any]]
    signal_node: Callable[[str, str], None] | None
    closing: threading.Event
    token: str | None
    loopback_only: bool
    timeout: ClassVar[float] = IDLE_TIMEOUT  # idle limit per receive and for a whole request head
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("http: " + format, *args)

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        self._head = _HeadDeadline(self.connection, self.timeout)
        self.rfile = io.BufferedReader(self._head)

    def handle_one_request(self) -> None:
        self._head.deadline = time.monotonic() + self.timeout  # request line and headers
        super().handle_one_request()

    def parse_request(self) -> bool:
        ok = super().parse_request()  # has read the headers
        self._head.deadline = None
        self.connection.settimeout(self.timeout)  # idle timeout again, for the answer
        return ok

    def _cross_origin(self) -> bool:
        """A browser names the page's origin; a page of another site must not drive us.

        Served on loopback, the Host must be a loopback name too: a page whose
        own name was re-pointed at 127.0.0.1 (DNS rebinding) is same-origin to
        itself, but names its own host.
        """
        host = self.headers.get("Host", "")
        origin = self.headers.get("Origin")
        foreign = origin is not None and origin != f"http://{host}"
        if self.loopback_only and _host_name(host) not in LOOPBACK:
            foreign = True
        if not foreign:
            return False
        self.close_connection = True
        self._send(403, "application/json",
                   b'{"ok": false, "error": "cross-origin requests are refused"}')
        return True

    def _authorized(self) -> bool:
        given = self.headers.get("Authorization", "").encode()
        if self.token is not None and hmac.compare_digest(given, f"Bearer {self.token}".encode()):
            return True
        self.close_connection = True
        why = "send Authorization: Bearer <token> from var/lib/fleet/runtime.token" \
            if self.token else "this runtime has no token file, so signals are disabled"
        self._send(401, "application/json", json.dumps({"ok": False, "error": why}).encode())
        return False

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self._cross_origin():
            return
        url = urlsplit(self.path)
        camera = parse_qs(url.query).get("camera", [None])[0]
        route = {
            "/": self._index,
            "/metrics": self._metrics,
            "/health": self._health,
            "/video": lambda: self._mjpeg(camera),
            "/frame.jpg": lambda: self._frame(camera),
        }.get(url.path)
        if route is None:
            self._send(404, "text/plain", b"not found\n")
        else:
            route()  # type: ignore[no-untyped-call]

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        """``POST /signal?node=NAME&signal=PAUSE|RESUME`` (Panorama's node signals)."""
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if self.headers.get("Content-Length", "0") != "0":
            self.close_connection = True  # we read no body, so the stream cannot be reused
        if self._cross_origin():
            return
        if url.path != "/signal" or self.signal_node is None:
            self._send(404, "text/plain", b"not found\n")
            return
        if not self._authorized():
            return
        try:
            self.signal_node(query.get("node", ""), query.get("signal", "").upper())
        except (KeyError, ValueError) as exc:
            error = str(exc.args[0]) if exc.args else str(exc)
            self._send(400, "application/json", json.dumps({"ok": False, "error": error}).encode())
            return
        self._send(200, "application/json", b'{"ok": true}')

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _index(self) -> None:
        links = "".join(f'<h3>{c}</h3><img src="/video?camera={c}">' for c in self.hub.cameras())
        nav = "<p><a href=/metrics>metrics</a> <a href=/health>health</a></p>"
        page = f"<html><body><h1>fleet-runtime</h1>{links}{nav}</body></html>"
        self._send(200, "text/html; charset=utf-8", page.encode())

    def _metrics(self) -> None:
        self._send(200, "text/plain; version=0.0.4; charset=utf-8", self.metrics_text().encode())

    def _health(self) -> None:
        doc = self.health_doc()
        code = 200 if doc["status"] in ("ok", "degraded") else 503
        self._send(code, "application/json", (json.dumps(doc, indent=1) + "\n").encode())

    def _frame(self, camera: str | None) -> None:
        found = self.hub.jpeg(camera, timeout=5.0)
        if found is None:
            self._send(503, "text/plain", b"no frame yet\n")
        else:
            self._send(200, "image/jpeg", found[1])

    def _mjpeg(self, camera: str | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        seq = 0
        try:
            while not self.closing.is_set():
                found = self.hub.jpeg(camera, after=seq, timeout=1.0)
                if found is None:
                    continue
                seq, data = found
                head = (
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n"
                )
                self.wfile.write(head.encode() + data + b"\r\n")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            return  # the viewer left, or stopped reading for longer than the idle timeout
