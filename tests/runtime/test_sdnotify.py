"""fleet-runtime speaks systemd's notify protocol: READY=1, WATCHDOG=1 while its loop turns,
STOPPING=1; a real datagram socket stands where systemd's would be (NOTIFY_SOCKET)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fleet_runtime import sdnotify


def _socket(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(60)
    return sock


def test_notify_reaches_the_socket_and_is_silent_without_one(tmp_path: Path) -> None:
    with _socket(tmp_path) as sock:
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify")}
        assert sdnotify.notify("READY=1", env)
        assert sock.recv(256) == b"READY=1"
    assert not sdnotify.notify("READY=1", {})
    assert not sdnotify.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")})


@pytest.mark.parametrize("env", [
    {"WATCHDOG_USEC": "1000000"},  # no socket
    {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "0"},
    {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "²"},
    {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "100", "WATCHDOG_PID": "1"},  # another process's
])
def test_no_watchdog_unless_it_is_ours(env: dict[str, str]) -> None:
    assert sdnotify.Watchdog.from_env(env) is None


def test_watchdog_pings_at_half_the_interval_after_its_probe(tmp_path: Path) -> None:
    with _socket(tmp_path) as sock:
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "3600000000",
               "WATCHDOG_PID": str(os.getpid())}
        dog = sdnotify.Watchdog.from_env(env)
        assert dog is not None and dog.every_s == 1800
        probed: list[int] = []
        dog.kick(lambda: probed.append(1))
        dog.kick(lambda: probed.append(1))  # not due again for half an hour
        assert probed == [1] and sock.recv(256) == b"WATCHDOG=1"
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(256)


def test_the_runtime_says_ready_pings_and_says_stopping(color_app: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    cameras = tmp_path / "cameras.json"
    cameras.write_text(json.dumps({"cameras": [{"name": "camera_node",
                                                "url": "synthetic:64x48@15"}]}))
    with _socket(tmp_path) as sock:
        env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"),
               "WATCHDOG_USEC": "200000", "XDG_STATE_HOME": str(tmp_path / "state")}
        env.pop("WATCHDOG_PID", None)
        run = subprocess.run(
            [sys.executable, "-m", "fleet_runtime.runtime_cli", "run", str(color_app),
             "--cameras", str(cameras), "--duration", "1.5"],
            env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        sock.setblocking(False)
        got = []
        while True:
            try:
                got.append(sock.recv(256).decode())
            except BlockingIOError:
                break
    assert got[0] == "READY=1" and got[-1] == "STOPPING=1", got
    assert got.count("WATCHDOG=1") >= 2, got  # 1.5 s of running at a 0.1 s ping interval
