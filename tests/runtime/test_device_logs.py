"""Device logging, redaction and `fleet-agent logs export` (runtime side)."""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from fleet_runtime import logs
from fleet_runtime.layout import Layout

PASSWORD = "Cam-Pa55-zz91"


def make_device(root: Path) -> Layout:
    layout = Layout(root)
    layout.etc.mkdir(parents=True)
    layout.device_json.write_text(json.dumps({"name": "dev1", "site": "hq", "serial": "S1"}))
    cameras = {"cameras": [{"name": "door", "url": "rtsp://10.0.0.7/live",
                            "credentials": {"username": "admin", "password": PASSWORD}}]}
    (layout.etc / "cameras.json").write_text(json.dumps(cameras))
    return layout


def agent(layout: Layout, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "FLEET_ROOT": str(layout.root)}
    return subprocess.run(
        [sys.executable, "-m", "fleet_runtime.agent.cli", *args],
        env=env, capture_output=True, timeout=60,
    )


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar if m.isfile()}


def stamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(epoch))


# ---- redaction -----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("line", "secret"),
    [
        (b"connect rtsp://admin:hunter22@10.0.0.7:554/live failed", b"hunter22"),
        (b"config password=hunter22 user=x", b"hunter22"),
        (b'{"password": "hunter22"}', b"hunter22"),
        (b"GET / Authorization: Bearer abc.DEF-123_tok", b"abc.DEF-123_tok"),
        (b"GET / Authorization: Basic YWRtaW46aHVudGVyMjI=", b"YWRtaW46aHVudGVyMjI="),
        (b'{"authorization": "BASIC YWRtaW46aHVudGVyMjI="}', b"YWRtaW46aHVudGVyMjI"),
        (b"jwt eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.SflKxwRJSMeKKF2QT4", b"SflKxwRJSMeKKF2QT4"),
        (b"aws key AKIAIOSFODNN7EXAMPLE in env", b"AKIAIOSFODNN7EXAMPLE"),
        (b"token: s3cr3t-t0k3n", b"s3cr3t-t0k3n"),
        (b"known secret Cam-Pa55-zz91 printed raw", PASSWORD.encode()),
        # Each pattern is gated on a cheap check (a keyword in a lowered, letters-only
        # view of the text, or one byte such as "@" or "J"): a secret must be masked
        # however its keyword is cased or punctuated.
        (b"PASSWORD=hunter22 ok", b"hunter22"),
        (b"db PassWd: hunter22", b"hunter22"),
        (b"env SECRET_ACCESS_KEY=wJalrXUtnFEMI", b"wJalrXUtnFEMI"),
        (b"X-Api-Key: k3y-v4lue", b"k3y-v4lue"),
        (b"hdr AUTHORIZATION=t0k3n-v4lue", b"t0k3n-v4lue"),
        (b"hdr authorization: BEARER abc.DEF-123_tok", b"abc.DEF-123_tok"),
        (b'{"Token":"s3cr3t-t0k3n"}', b"s3cr3t-t0k3n"),
        (b"cam RTSP://Admin:hunter22@10.0.0.7/live", b"hunter22"),
        (b"aws ASIAIOSFODNN7EXAMPLE", b"ASIAIOSFODNN7EXAMPLE"),
    ],
)
def test_redactor_masks_secrets(line: bytes, secret: bytes) -> None:
    out = logs.Redactor({PASSWORD}).redact(line)
    assert secret not in out
    assert logs.MASK in out


def test_redactor_masks_multiline_private_key_and_keeps_the_rest() -> None:
    text = (b"before\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB0r\nAwEHoUQDQgAE\n"
            b"-----END EC PRIVATE KEY-----\nafter\n")
    out = logs.Redactor().redact(text)
    assert b"MHcCAQEEIB0r" not in out and b"AwEHoUQDQgAE" not in out
    assert out.startswith(b"before\n") and out.endswith(b"after\n")


def test_redactor_leaves_ordinary_lines_alone() -> None:
    line = b"2026-11-22T01:00:00.000Z INFO runtime: 12 frames, 30.0 fps, tests passed: 3\n"
    assert logs.Redactor({PASSWORD}).redact(line) == line


def test_redactor_finds_one_secret_anywhere_in_a_big_piece() -> None:
    ordinary = b"2026-11-22T01:00:00.000Z INFO runtime: gate frame 7 decode 3.10 ms queue 1\n"
    filler = ordinary * 20000  # ~1.5 MB, no keyword, no "@", no "J"
    for line, secret in ((b"x Api_Key=zz-top-91\n", b"zz-top-91"),
                         (b"rtsp://u:UrlPw99@cam/\n", b"UrlPw99"),
                         (b"jwt eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.Sfl\n", b"eyJzdWIiOiIxMjM0")):
        for where in (0, len(filler) // 2, len(filler)):
            out = logs.Redactor().redact(filler[:where] + line + filler[where:])
            assert secret not in out and out.count(logs.MASK) == 1, (line, where)


def test_redactor_masks_secrets_next_to_an_earlier_mask() -> None:
    # A known secret is masked first; the keyword-gated patterns still see the rest.
    line = f"a={PASSWORD} token={PASSWORD}x BEARER zz9 api-key: {PASSWORD}".encode()
    out = logs.Redactor({PASSWORD}).redact(line)
    assert out == b"a=[REDACTED] token=[REDACTED]x BEARER [REDACTED] api-key: [REDACTED]"


def test_device_secrets_are_found_in_nested_configuration(tmp_path: Path) -> None:
    layout = make_device(tmp_path)
    (layout.etc / "mqtt.json").write_text(json.dumps({"endpoint": "rtsp://u:UrlPw99@x/",
                                                      "key_file": "/etc/fleet/device.key"}))
    found = logs.device_secrets(layout)
    assert PASSWORD in found and "UrlPw99" in found
    assert "/etc/fleet/device.key" not in found


# ---- device logger -------------------------------------------------------------------

def test_device_logger_writes_one_redacted_line_per_event(tmp_path: Path) -> None:
    layout = make_device(tmp_path)
    log = logs.device_logger(layout, "runtime")
    log.warning("camera door: rtsp://admin:%s@10.0.0.7/live\nretrying", PASSWORD)
    lines = (layout.logs / "runtime.log").read_text().splitlines()
    assert len(lines) == 1
    assert " WARNING runtime: camera door: rtsp://admin:[REDACTED]@" in lines[0]
    assert "\\nretrying" in lines[0] and PASSWORD not in lines[0]
    assert logs.line_time(lines[0].encode()) == pytest.approx(time.time(), abs=5)


def test_device_logger_rotates_under_its_size_limit(tmp_path: Path) -> None:
    layout = make_device(tmp_path)
    log = logs.device_logger(layout, "apps/people", max_bytes=2000, backups=2)
    for i in range(200):
        log.info("frame %d processed", i)
    files = sorted(p.name for p in (layout.logs / "apps").iterdir())
    assert files == ["people.log", "people.log.1", "people.log.2"]
    assert all(p.stat().st_size <= 2000 for p in (layout.logs / "apps").iterdir())


# ---- export --------------------------------------------------------------------------

def plant_logs(layout: Layout, now: float) -> None:
    (layout.logs / "apps").mkdir(parents=True)
    old, recent = stamp(now - 3 * 86400), stamp(now - 600)
    (layout.logs / "agent.log").write_text(
        f"{old} INFO agent: old event\n{recent} INFO agent: recent event\n")
    (layout.logs / "apps/people.log").write_text(
        f"{recent} ERROR people: auth failed for rtsp://admin:{PASSWORD}@10.0.0.7/live\n"
        f"{recent} INFO people: password {PASSWORD} was printed by the app\n")
    (layout.root / "var/log/syslog").write_text(f"{recent} kernel: eth0 up\n")


def test_export_stdout_streams_a_verified_redacted_bundle(tmp_path: Path) -> None:
    layout = make_device(tmp_path / "dev")
    plant_logs(layout, time.time())
    proc = agent(layout, "logs", "export", "--stdout")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stderr.decode().strip().splitlines()[-1])
    assert result["ok"] and result["bundle"]["bytes"] == len(proc.stdout)
    bundle = tmp_path / "b.tar.gz"
    bundle.write_bytes(proc.stdout)
    manifest = logs.verify_bundle(bundle)
    assert manifest["device"] == "dev1" and manifest["site"] == "hq"
    files = members(proc.stdout)
    assert {"var/log/fleet/agent.log", "var/log/fleet/apps/people.log",
            "var/log/syslog", "manifest.json"} <= set(files)
    assert all(PASSWORD.encode() not in body for body in files.values())
    assert manifest["time_range"]["start"] < manifest["time_range"]["end"]


@pytest.mark.parametrize("compressor", ["isal", "zlib"])
def test_bundle_is_plain_gzip_whichever_deflate_wrote_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compressor: str) -> None:
    from fleet_runtime.agent import logs as export

    if compressor == "zlib":  # a device without the isal wheel falls back to zlib
        monkeypatch.setitem(sys.modules, "isal", None)
    layout = make_device(tmp_path / "dev")
    plant_logs(layout, time.time())
    (layout.logs / "big.log").write_bytes(os.urandom(300_000).hex().encode())  # many blocks
    args = argparse.Namespace(since=None, max_bytes=export.DEFAULT_MAX_BYTES)
    meta, pieces = export.collect(args, layout)
    out = io.BytesIO()
    manifest = export.write_bundle(export._Counting(out), layout, pieces, meta)
    data = out.getvalue()
    assert gzip.decompress(data)  # one whole gzip stream: header, data, CRC-32 and length
    bundle = tmp_path / "b.tar.gz"
    bundle.write_bytes(data)
    assert logs.verify_bundle(bundle)["files"] == manifest["files"]
    assert members(data)["var/log/fleet/big.log"] == (layout.logs / "big.log").read_bytes()


def test_export_since_keeps_only_recent_lines(tmp_path: Path) -> None:
    layout = make_device(tmp_path / "dev")
    plant_logs(layout, time.time())
    proc = agent(layout, "logs", "export", "--stdout", "--since", "24h")
    agent_log = members(proc.stdout)["var/log/fleet/agent.log"]
    assert b"recent event" in agent_log and b"old event" not in agent_log


def test_export_max_bytes_keeps_the_newest_logs(tmp_path: Path) -> None:
    layout = make_device(tmp_path / "dev")
    layout.logs.mkdir(parents=True)
    now = time.time()
    lines = "".join(f"{stamp(now - 1000 + i)} INFO agent: event {i:05d}\n" for i in range(1000))
    (layout.logs / "agent.log").write_text(lines)
    proc = agent(layout, "logs", "export", "--stdout", "--max-bytes", "4096")
    manifest = json.loads(members(proc.stdout)["manifest.json"])
    assert manifest["truncated"] and manifest["bytes"] <= 4096
    kept = members(proc.stdout)["var/log/fleet/agent.log"]
    assert kept.endswith(b"event 00999\n") and b"event 00000" not in kept
    assert kept.startswith(stamp(now).encode()[:2])  # cut at a line start


def test_export_to_usb_writes_a_readable_bundle(tmp_path: Path) -> None:
    layout = make_device(tmp_path / "dev")
    plant_logs(layout, time.time())
    usb = tmp_path / "usb"
    usb.mkdir()
    proc = agent(layout, "logs", "export", "--usb", str(usb))
    result = json.loads(proc.stdout)
    assert result["ok"], result
    path = Path(result["path"])
    assert path.parent == usb / "edgefleet-logs" and path.name.startswith("dev1-")
    assert logs.verify_bundle(path)["redacted"] is True
    assert not list(usb.rglob("*.part"))


def test_export_to_missing_usb_is_refused(tmp_path: Path) -> None:
    layout = make_device(tmp_path / "dev")
    proc = agent(layout, "logs", "export", "--usb", str(tmp_path / "nope"))
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["error"]["code"] == "usb-not-found"


def test_verify_bundle_detects_a_changed_file(tmp_path: Path) -> None:
    layout = make_device(tmp_path / "dev")
    plant_logs(layout, time.time())
    files = members(agent(layout, "logs", "export", "--stdout").stdout)
    files["var/log/syslog"] += b"tampered\n"
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(f"top/{name}")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(buf.getvalue())
    with pytest.raises(logs.BundleError, match="var/log/syslog"):
        logs.verify_bundle(bad)


@pytest.mark.parametrize("inflate", ["isal", "gzip"])
@pytest.mark.parametrize("damage", ["cut in the middle", "trailer cut", "byte flipped",
                                    "deflate header flipped", "a flood after the archive"])
def test_verify_bundle_refuses_a_cut_or_damaged_stream(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inflate: str, damage: str) -> None:
    layout = make_device(tmp_path / "dev")
    plant_logs(layout, time.time())
    data = bytearray(agent(layout, "logs", "export", "--stdout").stdout)
    if inflate == "gzip":  # a controller without the isal wheel inflates with gzip
        monkeypatch.setitem(sys.modules, "isal", None)
    if damage == "cut in the middle":
        del data[len(data) // 2:]
    elif damage == "trailer cut":
        del data[-4:]
    elif damage == "deflate header flipped":  # inflate itself fails, not the CRC check
        data[10] ^= 0xFF
    elif damage == "a flood after the archive":  # a valid archive, then 4 MiB of zeros
        data = bytearray(gzip.compress(gzip.decompress(bytes(data)) + bytes(4 << 20)))
    else:
        data[len(data) // 2] ^= 0x55
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(logs.BundleError):
        logs.verify_bundle(bad)


def test_parse_since_accepts_durations_and_iso_times() -> None:
    assert logs.parse_since("30m", now=7200.0) == 5400.0
    assert logs.parse_since("1970-01-01T01:00:00Z") == 3600.0
    with pytest.raises(ValueError, match="--since"):
        logs.parse_since("yesterday")


def test_runtime_camera_bindings_are_secrets_too(tmp_path: Path) -> None:
    """The runtime's own ``etc/fleet/cameras.json`` shape (name -> url, username, password)."""
    layout = Layout(tmp_path)
    layout.etc.mkdir(parents=True)
    (layout.etc / "cameras.json").write_text(json.dumps({"cameras": {
        "dock": {"url": "rtsp://10.0.0.9/s1", "username": "admin", "password": "B1nd-Pw-77"}}}))
    line = b"2026-11-22T01:00:00.000Z ERROR runtime: auth B1nd-Pw-77 rejected\n"
    assert b"B1nd-Pw-77" not in logs.redactor_for(layout).redact(line)
