"""IoT Jobs on the real mosquitto lab: a stand-in for the service, the bundle server, daemons.

The broker is a real mosquitto (fixtures_mqtt). The AWS IoT Jobs service
itself cannot run here, so `JobsService` plays it on the documented topics
(``$aws/things/T/jobs/notify-next``, ``$next/get`` -> ``$next/get/accepted``,
``<jobId>/update``): it queues executions, answers $next/get and records every
update. It connects as the controller, the one identity besides the thing
itself that the broker's ACL lets publish on ``$aws/things/T/jobs/#``. Bundles
are served over real HTTP from 127.0.0.1; each device runs the real
`fleet-agent daemon`, stopped by PID.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_bundle import make_bundle, make_device
from fixtures_mqtt import Inbox, MqttLab
from fleet_runtime.layout import Layout


class JobsService:
    """Plays AWS IoT Jobs for one thing on the documented MQTT topics.

    Answers are published from a thread of its own: awscrt runs message
    callbacks on its event loop, which must not block waiting for a PUBACK."""

    def __init__(self, lab: MqttLab, thing: str) -> None:
        self.thing, self.base = thing, f"$aws/things/{thing}/jobs"
        self.client = lab.client()  # the controller's listener: a device holds one session
        self.queue: list[dict[str, Any]] = []
        self.updates = Inbox()
        self.client.subscribe(f"{self.base}/$next/get", self._on_get_next)
        self.client.subscribe(f"{self.base}/+/update", self._on_update)

    def add_job(self, job_id: str, document: dict[str, Any]) -> None:
        execution = {"jobId": job_id, "status": "QUEUED", "executionNumber": 1,
                     "versionNumber": 1, "jobDocument": document}
        self.queue.append(execution)
        self.client.publish(f"{self.base}/notify-next", {"execution": execution})

    def _next(self) -> dict[str, Any] | None:
        return next((e for e in self.queue if e["status"] in ("QUEUED", "IN_PROGRESS")), None)

    def _on_get_next(self, topic: str, message: dict[str, Any]) -> None:
        execution = self._next()
        answer = {"clientToken": message.get("clientToken")}
        if execution:
            answer["execution"] = execution
        self._send(f"{self.base}/$next/get/accepted", answer)

    def _on_update(self, topic: str, message: dict[str, Any]) -> None:
        job_id = topic.split("/")[-2]
        for execution in self.queue:
            if execution["jobId"] == job_id:
                execution["status"] = message["status"]
                execution["statusDetails"] = message.get("statusDetails", {})
        self.updates(topic, message)
        self._send(f"{topic}/accepted", {"clientToken": message.get("clientToken")})

    def _send(self, topic: str, body: dict[str, Any]) -> None:
        threading.Thread(target=self.client.publish, args=(topic, body), daemon=True).start()


@pytest.fixture
def bundle_server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    folder = tmp_path / "www"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, directory=str(folder), **kw)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def daemon_procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    stop_daemons(procs)


def stop_daemons(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def device_with_daemon(lab: MqttLab, root: Path, name: str, key: Any,
                       procs: list[subprocess.Popen[bytes]], **env: str) -> Layout:
    root = root / name  # make_device names the device after its root
    lab.device(root, name, "berlin", interval=5.0)  # MQTT certificate and mqtt.json
    layout = make_device(root, key)  # identity with hardware, factory slot, keyring
    procs.append(start_daemon(layout, **env))
    return layout


def start_daemon(layout: Layout, **env: str) -> subprocess.Popen[bytes]:
    """The device's `fleet-agent daemon` (its jobs handler runs inside it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "fleet_runtime.agent.cli", "daemon"],
        env={**os.environ, "FLEET_ROOT": str(layout.root), **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def publish_bundle(folder: Path, base: str, data: bytes, name: str) -> dict[str, Any]:
    (folder / name).write_bytes(data)
    return {"operation": "fleet-ota", "version": "1.1.0",
            "steps": ["download", "install", "activate", "reboot", "commit"],
            "bundle": {"url": f"{base}/{name}", "sha256": hashlib.sha256(data).hexdigest(),
                       "size": len(data), "name": name}}


def statuses(service: JobsService, job_id: str) -> list[tuple[str, str]]:
    return [(m["status"], m["statusDetails"].get("step", "")) for t, m in service.updates.messages
            if t.endswith(f"/{job_id}/update")]


@pytest.fixture
def failing_app() -> Iterator[int]:
    """A runtime whose /health says the application failed (as fleet-runtime answers then)."""

    class Failed(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server hook
            body = json.dumps({"status": "failed", "fps": 0.0, "cameras": {},
                               "reasons": ["detector model failed to load"]}).encode()
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failed)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def unhealthy_bundle(key: Any, app_port: int) -> bytes:
    """A 1.1.0 release whose self-test passes but whose application, once booted, reports
    failed: its start-up registers the app's port (as fleet-runtime does) at `app_port`."""
    starts_app = (f'#!/bin/sh\nmkdir -p "$FLEET_ROOT/run/fleet"\necho \'{{"http_port": '
                  f'{app_port}, "app": "detector"}}\' > "$FLEET_ROOT/run/fleet/runtime.json"\n'
                  ).encode()
    files = {"opt/edgefleet/VERSION": b"1.1.0\n", "opt/edgefleet/selftest": starts_app}
    return make_bundle(key, files, modes={"opt/edgefleet/selftest": 0o755},
                       hooks={"selftest": "opt/edgefleet/selftest"})
