"""Cameras that take their password as a URL parameter (``/user=admin&password=X&...``,
``?pwd=X``): the controller stores the URL with a ``{password}`` placeholder and seals the
value, so nothing it prints or writes holds the password; the device fills it back in."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_runtime.pipeline.sources import with_credentials
from labkit import run_cli

from fleet.camera_probe import probe_from_controller
from fleet.project import Project
from fleet.registry import open_registry

HEADER = "name,device,rtsp_url,username,password,description,tags"
SECRET = "Sx7-q!uery"  # noqa: S105 -- a test camera's password
ROWS = (
    f"dvr,dev-1,rtsp://10.0.0.5:554/user=admin&password={SECRET}&channel=1&stream=0.sdp,,,,\n"
    f"hik,dev-1,rtsp://10.0.0.6/stream?user=admin&PWD={SECRET},,,,\n"
    f"cheap,dev-1,rtsp://10.0.0.7/live?Password={SECRET}&ch=2,admin,{SECRET},,\n"
)


@pytest.fixture
def project_with_device(project: Project) -> Project:
    registry = open_registry(project)
    with registry.transaction():
        registry._upsert("dev-1", {"site": "berlin"})
    registry.close()
    return project


def _import(project: Project, tmp_path: Path, rows: str) -> tuple[int, str, str]:
    csv = tmp_path / "in" / "cameras.csv"
    csv.parent.mkdir(exist_ok=True)
    csv.write_text(f"{HEADER}\n{rows}", encoding="utf-8")
    res = run_cli(project.root, "cameras", "import", str(csv))
    return res.exit_code, res.stdout, res.stderr


def _files_holding(root: Path, needle: bytes) -> list[str]:
    """Files under the project (the input CSV aside) whose bytes hold `needle`."""
    return [
        str(p)
        for p in root.rglob("*")
        if p.is_file() and p.parent.name != "in" and needle in p.read_bytes()
    ]


def test_no_listing_showing_registry_or_log_file_holds_the_password(
    project_with_device: Project, tmp_path: Path
) -> None:
    project = project_with_device
    code, out, err = _import(project, tmp_path, ROWS)
    assert code == 0, err
    printed = out + err
    names = ("dvr", "hik", "cheap")
    views = [("list",), ("list", "--json")]
    views += [("show", n, *json_flag) for n in names for json_flag in ((), ("--json",))]
    for args in views:
        res = run_cli(project.root, "cameras", *args)
        assert res.exit_code == 0, res.stderr
        printed += res.stdout + res.stderr
    assert SECRET not in printed
    shown = json.loads(run_cli(project.root, "cameras", "show", "dvr", "--json").stdout)
    assert shown["camera"]["rtsp_url"] == (
        "rtsp://10.0.0.5:554/user=admin&password={password}&channel=1&stream=0.sdp"
    )
    assert shown["camera"]["password"] == "***"
    written = [p for p in project.root.rglob("*") if p.is_file() and p.parent.name != "in"]
    assert any(p.suffix in (".db", ".sqlite", ".sqlite3") for p in written), written
    assert _files_holding(project.root, SECRET.encode()) == []
    registry = open_registry(project)
    try:
        assert {n: registry.camera_password(n) for n in ("dvr", "hik", "cheap")} == dict.fromkeys(
            ("dvr", "hik", "cheap"), SECRET
        )
        assert registry.get_camera("hik")["rtsp_url"] == (
            "rtsp://10.0.0.6/stream?user=admin&PWD={password}"
        )
    finally:
        registry.close()


@pytest.mark.parametrize(
    ("rows", "column"),
    [
        (f"dvr,dev-1,rtsp://h/user=a&password={SECRET}&ch=1,,other-pass,,\n", "password"),
        (f"dvr,dev-1,rtsp://h/s?pwd={SECRET}&pass=another,,,,\n", "rtsp_url"),
        (f"dvr,dev-1,rtsp://u:another@h/s?pwd={SECRET},,,,\n", "rtsp_url"),
    ],
)
def test_two_different_passwords_refuse_the_row_and_import_nothing(
    project_with_device: Project, tmp_path: Path, rows: str, column: str
) -> None:
    good = "door,dev-1,rtsp://10.0.0.9/s,,,,\n"
    code, out, err = _import(project_with_device, tmp_path, good + rows)
    assert code == 1 and "Traceback" not in err  # as every invalid row (see test_cameras.py)
    problem = [line for line in err.splitlines() if "keep one" in line]
    assert len(problem) == 1 and " 3 " in problem[0] and column in problem[0]
    assert SECRET not in out + err
    registry = open_registry(project_with_device)
    try:
        assert registry.list_cameras() == []
    finally:
        registry.close()


def test_the_device_fills_the_placeholder_when_it_opens_the_stream() -> None:
    stored = "rtsp://10.0.0.5:554/user=admin&password={password}&channel=1&stream=0.sdp"
    assert with_credentials(stored, None, "a&b/c+d!") == (
        "rtsp://10.0.0.5:554/user=admin&password=a%26b%2Fc%2Bd!&channel=1&stream=0.sdp"
    )
    assert with_credentials("rtsp://h/s?pwd={password}", "admin", SECRET) == (
        "rtsp://admin:Sx7-q%21uery@h/s?pwd=Sx7-q!uery"
    )
    assert with_credentials("rtsp://h/s?ch=1", None, SECRET) == "rtsp://h/s?ch=1"


class _QueryPasswordCamera:
    """A real TCP RTSP endpoint that, like a cheap DVR, serves the stream only when the
    request URI carries the right ``password=`` parameter; it records the URIs it saw."""

    SDP = b"v=0\r\ns=cam\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.seen: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        lines = data.decode("latin-1").split("\r\n")
        uri = lines[0].split(" ")[1]
        self.seen.append(uri)
        cseq = next(
            (ln.split(":", 1)[1].strip() for ln in lines if ln.lower().startswith("cseq")), "1"
        )
        if f"password={SECRET}&" in uri:
            head = (
                f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Type: application/sdp\r\n"
                f"Content-Length: {len(self.SDP)}\r\n\r\n"
            )
            conn.sendall(head.encode() + self.SDP)
        else:
            conn.sendall(
                f"RTSP/1.0 403 Forbidden\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n".encode()
            )


@pytest.fixture
def query_camera() -> Iterator[_QueryPasswordCamera]:
    cam = _QueryPasswordCamera()
    yield cam
    cam.sock.close()
    cam.thread.join(timeout=10)


def test_the_probe_sends_the_real_password_to_the_camera(
    project_with_device: Project, tmp_path: Path, query_camera: _QueryPasswordCamera
) -> None:
    port = query_camera.port
    row = f"dvr,dev-1,rtsp://127.0.0.1:{port}/user=admin&password={SECRET}&channel=1,,,,\n"
    code, _, err = _import(project_with_device, tmp_path, row)
    assert code == 0, err
    registry = open_registry(project_with_device)
    try:
        [found] = probe_from_controller(registry, registry.list_cameras(), timeout=10.0)
    finally:
        registry.close()
    assert (found["status"], found["codec"]) == ("REACHABLE", "H264")
    assert query_camera.seen[-1].endswith(f"/user=admin&password={SECRET}&channel=1")
    assert SECRET not in found["url"] and "{password}" in found["url"]
