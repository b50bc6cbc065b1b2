"""`fleet cameras probe` against real RTSP servers (gst-rtsp-server), from the controller and
from a lab device over SSH, and a grep of every output for a planted camera password."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from fixtures_rtsp_probe import DIGEST_PASSWORD, DIGEST_USER, digest_rtsp_server  # noqa: F401
from fleet_runtime.rtsp import authorization, probe, sdp_codecs
from labkit import run_cli
from rtsp_server import RtspServer, rtsp_server  # noqa: F401

from fleet.lab import Lab

HEADER = "name,device,rtsp_url,username,password,description,tags"
PLANTED = "Planted-Secret-93f1c2"


@pytest.fixture(scope="module")
def silent_server() -> Iterator[str]:
    """A TCP server that accepts and never answers: the probe must time out, not hang."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"rtsp://127.0.0.1:{listener.getsockname()[1]}/silent"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_sdp_codecs_and_digest_answer() -> None:
    sdp = (
        "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
        "m=audio 0 RTP/AVP 8\r\nm=video 0 RTP/AVP 97\r\na=rtpmap:97 H265/90000\r\n"
    )
    assert sdp_codecs(sdp) == [("video", "H264"), ("audio", "PCMA"), ("video", "H265")]
    # RFC 2617 section 3.5's worked example (qop=auth).
    challenge = (
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    scheme, header = authorization(
        [challenge], "GET", "/dir/index.html", "Mufasa", "Circle Of Life", cnonce="0a4f113b"
    )
    assert scheme == "digest" and 'response="6629fae49393a05397450978507c4ef1"' in header


def test_probe_statuses_from_the_controller(
    rtsp_server: RtspServer,  # noqa: F811
    silent_server: str,
) -> None:
    s = rtsp_server
    found = probe(s.h264_url)
    assert (found.status, found.codec, found.codecs) == ("REACHABLE", "H264", ["H264"])
    assert probe(s.url("secure")).status == "AUTH_FAILED"
    assert probe(s.url("secure"), s.username, s.password).auth == "basic"
    assert probe(s.url("secure"), s.username, "wrong").status == "AUTH_FAILED"
    assert probe(s.url("nothing-here")).status == "NOT_FOUND"
    assert probe(silent_server, timeout=0.5).status == "TIMEOUT"
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        closed = f"rtsp://127.0.0.1:{free.getsockname()[1]}/x"
    assert probe(closed).status == "UNREACHABLE"
    if s.h265_url:
        h265 = probe(s.h265_url)
        assert (h265.status, h265.codec) == ("CODEC_UNSUPPORTED", "H265")
        assert "did not provide an H264" in h265.detail


def test_probe_with_digest_auth(digest_rtsp_server: RtspServer) -> None:  # noqa: F811
    url = digest_rtsp_server.url("secure")
    assert probe(url).status == "AUTH_FAILED"
    found = probe(url, DIGEST_USER, DIGEST_PASSWORD)
    assert (found.status, found.auth, found.codec) == ("REACHABLE", "digest", "H264")
    assert probe(url, DIGEST_USER, "nope").status == "AUTH_FAILED"


@pytest.fixture(scope="module")
def lab_cameras(
    lab: Lab,
    rtsp_server: RtspServer,  # noqa: F811
    silent_server: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Lab:
    """The lab's devices registered, with cameras on the test RTSP server."""
    root = lab.project.root
    assert run_cli(root, "devices", "register", "-i", "lab").exit_code == 0
    s = rtsp_server
    user_url = f"rtsp://{s.username}:{quote(s.password)}@127.0.0.1:{s.port}/secure"
    rows = [
        HEADER,
        f"entrance,berlin-01,{s.h264_url},,,Entrance,app=people",
        f"vault,berlin-01,{user_url},,,Vault,",
        f"stockroom,berlin-02,{s.url('secure')},{s.username},{PLANTED},,",
        f"garage,lisbon-01,{s.url('missing')},,,,",
        f"roof,lisbon-01,{silent_server},,,,",
    ]
    if s.h265_url:
        rows.append(f"hallway,lisbon-02,{s.h265_url},,,,")
    csv_path = tmp_path_factory.mktemp("csv") / "cameras.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    res = run_cli(root, "cameras", "import", str(csv_path))
    assert res.exit_code == 0, res.stderr
    return lab


EXPECTED = {
    "entrance": "REACHABLE",
    "vault": "REACHABLE",
    "stockroom": "AUTH_FAILED",
    "garage": "NOT_FOUND",
    "roof": "TIMEOUT",
    "hallway": "CODEC_UNSUPPORTED",
}


@pytest.mark.parametrize("via", ["controller", "device"])
def test_cli_probe_records_status_and_codec(lab_cameras: Lab, via: str) -> None:
    root = lab_cameras.project.root
    flags = ["--from-device"] if via == "device" else []
    res = run_cli(root, "cameras", "probe", "--all", "--timeout", "1", "--json", *flags)
    assert res.exit_code == 1  # some cameras are not usable
    got = {c["name"]: c for c in json.loads(res.stdout)["cameras"]}
    assert {n: c["status"] for n, c in got.items()} == {  # details: {got}
        n: s for n, s in EXPECTED.items() if n in got
    }
    assert got["entrance"]["via"] == ("controller" if via == "controller" else "berlin-01")
    listed = json.loads(run_cli(root, "cameras", "list", "--json").stdout)["cameras"]
    assert {c["name"]: c["status"] for c in listed} == {n: got[n]["status"] for n in got}
    assert next(c for c in listed if c["name"] == "entrance")["codec"] == "H264"


def test_probe_selection_errors(lab_cameras: Lab) -> None:
    root = lab_cameras.project.root
    assert run_cli(root, "cameras", "probe").exit_code == 2
    res = run_cli(root, "cameras", "probe", "ghost")
    assert res.exit_code != 0 and "ghost" in res.stderr
    ok = run_cli(root, "cameras", "probe", "entrance", "--json")
    assert ok.exit_code == 0 and json.loads(ok.stdout)["cameras"][0]["status"] == "REACHABLE"


def test_no_output_log_or_file_contains_a_camera_password(
    lab_cameras: Lab, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    root = lab_cameras.project.root
    good = tmp_path / "more.csv"
    good.write_text(f"{HEADER}\nporch,berlin-02,rtsp://admin:{PLANTED}@127.0.0.1:9/porch,,,,\n")
    bad = tmp_path / "bad.csv"
    bad.write_text(
        f"{HEADER}\n"
        f"x1,berlin-02,rtsp://admin:{PLANTED}@127.0.0.1:99999/p,,,,\n"
        f"x2,berlin-02,rtsp://admin:{PLANTED}@127.0.0.1/p,admin,{PLANTED},,\n"
        f"x3,berlin-02,rtsp://127.0.0.1/p,,{PLANTED},,\n"
        f"x4,berlin-02,rtsp://127.0.0.1/p,admin,{PLANTED}\x01,,\n"
        f"x5,ghost,rtsp://127.0.0.1/p,admin,{PLANTED},,\n"
        f"porch,berlin-02,rtsp://127.0.0.1/p,admin,{PLANTED},,\n"
    )
    commands = [
        ["cameras", "import", str(good)],
        ["cameras", "import", str(bad)],
        ["cameras", "import", str(bad), "--json"],
        ["cameras", "import", str(good), "--dry-run", "--on-conflict", "update", "--json"],
        ["cameras", "list"],
        ["cameras", "list", "--json"],
        ["cameras", "show", "stockroom"],
        ["cameras", "show", "stockroom", "--json"],
        ["cameras", "show", "porch", "--json"],
        ["cameras", "probe", "stockroom", "porch", "--timeout", "1"],
        ["cameras", "probe", "stockroom", "porch", "--timeout", "1", "--json"],
        ["cameras", "probe", "stockroom", "--from-device", "--json"],
        ["devices", "show", "berlin-02", "--json"],
        ["devices", "list", "--json"],
        ["cameras", "remove", "porch", "--json"],
    ]
    outputs = []
    for argv in commands:
        res = run_cli(root, *argv)
        outputs.append(f"$ {argv}\n{res.stdout}\n{res.stderr}")
    assert "problem(s)" in outputs[1] and '"errors"' in outputs[2]
    text = "\n".join(outputs) + "\n".join(r.getMessage() for r in caplog.records)
    for form in (PLANTED, quote(PLANTED)):
        assert form not in text
    leaked = [p for p in _state_files(lab_cameras) if PLANTED.encode() in p.read_bytes()]
    assert leaked == []


def _state_files(lab: Lab) -> list[Path]:
    """Everything the controller and the lab devices wrote: databases, WAL, logs, state."""
    root = lab.project.root / ".fleet"
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


@pytest.mark.parametrize("retry_after", ["\u00b2", "\u0663", "1.5", ""])
def test_a_busy_camera_with_an_odd_retry_after_is_an_error_not_a_traceback(
        retry_after: str) -> None:
    """str.isdigit() takes "²", which float() refuses: a camera answering 503 with it made
    the probe raise ValueError (an internal error for every camera of the request)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def busy() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn = listener.accept()[0]
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                head = b""
                while b"\r\n\r\n" not in head and (chunk := conn.recv(4096)):
                    head += chunk
                cseq = next((ln.split(":", 1)[1].strip() for ln in head.decode().split("\r\n")
                             if ln.lower().startswith("cseq:")), "1")
                conn.sendall(f"RTSP/1.0 503 Service Unavailable\r\nCSeq: {cseq}\r\n"
                             f"Retry-After: {retry_after}\r\n\r\n".encode())

    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    try:
        result = probe(f"rtsp://127.0.0.1:{listener.getsockname()[1]}/busy", timeout=3)
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert result.rtsp_status == 503 and "503" in result.detail, result
