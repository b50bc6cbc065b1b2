"""The runtime's HTTP server: POST /signal needs the device token, other sites are refused,
and idle connections can neither pile up threads nor stay open for ever."""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_runtime.http_token import ensure_token, read_token
from fleet_runtime.layout import Layout
from fleet_runtime.pipeline.sinks import MAX_CONNECTIONS, HttpServer, OutputHub

TOKEN = "k" * 43


class Signals:
    def __init__(self) -> None:
        self.got: list[tuple[str, str]] = []

    def __call__(self, node: str, name: str) -> None:
        self.got.append((node, name))


def serve(token: str | None, **kw: float) -> tuple[HttpServer, Signals]:
    signals = Signals()
    server = HttpServer(OutputHub(), lambda: "up 1\n", lambda: {"status": "ok"},
                        signal=signals, token=token, **kw)  # type: ignore[arg-type]
    server.start()
    return server, signals


@pytest.fixture
def server() -> Iterator[tuple[HttpServer, Signals]]:
    server, signals = serve(TOKEN)
    yield server, signals
    server.stop()


def request(port: int, path: str, method: str = "POST", **headers: str) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


SIGNAL = "/signal?node=code_node&signal=PAUSE"


@pytest.mark.parametrize("auth", [None, "", "Bearer ", f"Bearer {TOKEN}x", f"Basic {TOKEN}",
                                  f"bearer {TOKEN}"])
def test_signal_without_the_token_is_refused(server, auth: str | None) -> None:
    srv, signals = server
    headers = {} if auth is None else {"Authorization": auth}
    code, body = request(srv.port, SIGNAL, **headers)
    assert code == 401 and "runtime.token" in body["error"]
    assert signals.got == []


def test_signal_with_the_token_is_delivered(server) -> None:
    srv, signals = server
    assert request(srv.port, SIGNAL, Authorization=f"Bearer {TOKEN}") == (200, {"ok": True})
    assert signals.got == [("code_node", "PAUSE")]


def test_without_a_token_file_signals_are_disabled() -> None:
    srv, signals = serve(None)
    try:
        code, body = request(srv.port, SIGNAL, Authorization="Bearer ")
        assert code == 401 and "disabled" in body["error"] and signals.got == []
    finally:
        srv.stop()


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_a_page_of_another_site_is_refused(server, method: str) -> None:
    """What a browser sends for a cross-origin fetch or form post, token or not."""
    srv, signals = server
    path = SIGNAL if method == "POST" else "/health"
    for origin in ("http://evil.example", "null", f"http://127.0.0.1:{srv.port + 1}"):
        code, body = request(srv.port, path, method, Origin=origin,
                             Authorization=f"Bearer {TOKEN}")
        assert code == 403 and "cross-origin" in body["error"]
    assert signals.got == []
    same = request(srv.port, path, method, Origin=f"http://127.0.0.1:{srv.port}",
                   Authorization=f"Bearer {TOKEN}")
    assert same[0] == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "[", ""])
def test_a_page_on_a_rebound_name_is_refused(server, host: str) -> None:
    """DNS rebinding: evil.example now resolves to 127.0.0.1, and its page is same-origin."""
    srv, _ = server
    origin = {"Origin": f"http://{host}"} if host else {}
    for path, method in (("/health", "GET"), (SIGNAL, "POST")):
        code, body = request(srv.port, path, method, Host=host, **origin,
                             Authorization=f"Bearer {TOKEN}")
        assert code == 403 and "cross-origin" in body["error"]
    assert request(srv.port, "/health", "GET", Host="localhost")[0] == 200


def _recv_all(sock: socket.socket) -> bytes:
    sock.settimeout(30)  # generous: the server answers at once or closes after its idle timeout
    chunks = []
    while chunk := sock.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def test_connections_beyond_the_limit_get_503_and_no_thread(server) -> None:
    srv, _ = server
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(300)]
    try:
        extra = idle[MAX_CONNECTIONS:]
        for sock in extra:  # accepted in order, so these are the ones over the limit
            assert _recv_all(sock).startswith(b"HTTP/1.1 503")
        assert threading.active_count() - before <= MAX_CONNECTIONS
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 30
    while request(srv.port, "/health", "GET")[0] != 200:  # slots come back as the peers leave
        assert time.monotonic() < deadline, "the server never recovered"


def test_an_idle_connection_is_closed() -> None:
    srv, _ = serve(TOKEN, idle_timeout=0.5)
    try:
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            assert _recv_all(sock) == b""  # closed by the server, having sent nothing
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # then silence
            data = _recv_all(sock)  # the answer, then the end once the connection has idled
            assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"}\n")
    finally:
        srv.stop()


def test_a_request_head_trickled_a_byte_at_a_time_is_cut_off() -> None:
    # Slowloris: each byte comes well inside the idle timeout, so the idle timeout alone
    # never fires, and 64 such clients held every slot for ever. The whole head must
    # arrive within the idle timeout.
    srv, _ = serve(TOKEN, idle_timeout=0.5, max_connections=1)
    try:
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            cut = False
            for _ in range(600):  # 60 s of trickling, 120 times the server's limit
                try:
                    sock.sendall(b"X")
                except OSError:  # reset: the server has closed it
                    cut = True
                    break
                readable, _w, _x = select.select([sock], [], [], 0.1)
                if readable:
                    cut = True
                    break
            assert cut, "a request head trickled for 60 s kept its connection"
            with contextlib.suppress(ConnectionResetError):
                assert not sock.recv(4096).startswith(b"HTTP/1.1 200")
        assert request(srv.port, "/health", "GET")[0] == 200  # its slot is free again
    finally:
        srv.stop()


def test_token_file_is_private_and_stable(tmp_path: Path) -> None:
    path = Layout(tmp_path).runtime_token
    token = ensure_token(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(token) >= 43
    assert ensure_token(path) == token == read_token(path)
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="readable by others"):
        read_token(path)


def test_fleet_runtime_run_keeps_the_token_under_fleet_root(color_app: Path, tmp_path: Path):
    root = tmp_path / "device"
    (root / "etc/fleet").mkdir(parents=True)
    (root / "etc/fleet/device.json").write_text('{"name": "lab-01"}')
    argv = [sys.executable, "-m", "fleet_runtime.runtime_cli", "run", str(color_app),
            "--camera", "camera_node=synthetic:64x48@15", "--http", "0"]
    proc = subprocess.Popen(argv, env={**os.environ, "FLEET_ROOT": str(root)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the runtime says where it serves once it is ready
            if "serving http://" in line:
                port = int(line.split("serving http://127.0.0.1:")[1].split("/")[0])
                break
        token_file = Layout(root).runtime_token
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        signal = "/signal?node=code_node&signal=RESUME"
        assert request(port, signal)[0] == 401
        assert request(port, signal, Authorization=f"Bearer {read_token(token_file)}") == (
            200, {"ok": True})
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
