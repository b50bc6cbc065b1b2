"""The device's IoT Jobs handler, run by the real `fleet-agent daemon` over mutual TLS.

The broker is a real mosquitto (fixtures_mqtt). The AWS IoT Jobs service
itself cannot run here, so `JobsService` below plays it on the documented
topics (``$aws/things/T/jobs/notify-next``, ``$next/get`` ->
``$next/get/accepted``, ``<jobId>/update``): it queues executions, answers
$next/get and records every update. It connects as the controller, the one
identity besides the thing itself that the broker's ACL lets publish on
``$aws/things/T/jobs/#`` (a second connection with the thing's certificate
would take the daemon's client id, which the broker binds to the CN). The bundle is served over real HTTP from 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for fixtures

import fixtures_mqtt  # noqa: E402
from fixtures_bundle import make_bundle, make_device, new_key  # noqa: E402
from fixtures_mqtt import Inbox, MqttLab  # noqa: E402
from fleet_runtime import slots  # noqa: E402

mqtt_broker = fixtures_mqtt.mqtt_broker  # the session fixture, used by name below
SELFTEST_FAILS = b"#!/bin/sh\necho 'camera pipeline did not start' >&2\nexit 1\n"


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
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def device_with_daemon(lab: MqttLab, root: Path, name: str, key: Any,
                       procs: list[subprocess.Popen[bytes]]):
    root = root / name  # make_device names the device after its root
    lab.device(root, name, "berlin", interval=5.0)  # MQTT certificate and mqtt.json
    layout = make_device(root, key)  # identity with hardware, factory slot, keyring
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "fleet_runtime.agent.cli", "daemon"],
        env={**os.environ, "FLEET_ROOT": str(root)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return layout


def publish_bundle(folder: Path, base: str, data: bytes, name: str) -> dict[str, Any]:
    (folder / name).write_bytes(data)
    return {"operation": "fleet-ota", "version": "1.1.0",
            "steps": ["download", "install", "activate", "reboot", "commit"],
            "bundle": {"url": f"{base}/{name}", "sha256": hashlib.sha256(data).hexdigest(),
                       "size": len(data), "name": name}}


def statuses(service: JobsService, job_id: str) -> list[tuple[str, str]]:
    return [(m["status"], m["statusDetails"].get("step", "")) for t, m in service.updates.messages
            if t.endswith(f"/{job_id}/update")]


def test_job_runs_install_reboot_commit_and_reports_success(
        mqtt_broker: MqttLab, tmp_path: Path, bundle_server, daemon_procs) -> None:
    key = new_key()
    layout = device_with_daemon(mqtt_broker, tmp_path / "dev", "jobs-ok-01", key, daemon_procs)
    service = JobsService(mqtt_broker, "jobs-ok-01")
    folder, base = bundle_server
    service.add_job("r-ok-1", publish_bundle(folder, base, make_bundle(key), "os-1.1.0.bundle"))

    _, done = service.updates.wait_for(lambda t, m: m["status"] in ("SUCCEEDED", "FAILED"), 30)
    assert done["status"] == "SUCCEEDED", done
    assert done["statusDetails"]["version"] == "1.1.0"
    assert all(isinstance(v, str) for v in done["statusDetails"].values())
    assert statuses(service, "r-ok-1") == [
        ("IN_PROGRESS", "download"), ("IN_PROGRESS", "install"), ("IN_PROGRESS", "activate"),
        ("IN_PROGRESS", "reboot"), ("IN_PROGRESS", "commit"), ("SUCCEEDED", "done")]
    assert slots.software_version(layout) == "1.1.0"
    assert slots.read_state(layout)["state"] == "idle"  # committed


def test_failed_selftest_rolls_back_and_reports_failure(
        mqtt_broker: MqttLab, tmp_path: Path, bundle_server, daemon_procs) -> None:
    key = new_key()
    layout = device_with_daemon(mqtt_broker, tmp_path / "dev", "jobs-bad-01", key, daemon_procs)
    service = JobsService(mqtt_broker, "jobs-bad-01")
    folder, base = bundle_server
    files = {"opt/edgefleet/VERSION": b"1.1.0\n", "opt/edgefleet/selftest": SELFTEST_FAILS}
    data = make_bundle(key, files, modes={"opt/edgefleet/selftest": 0o755},
                       hooks={"selftest": "opt/edgefleet/selftest"})
    service.add_job("r-bad-1", publish_bundle(folder, base, data, "bad.bundle"))

    _, done = service.updates.wait_for(lambda t, m: m["status"] in ("SUCCEEDED", "FAILED"), 30)
    assert done["status"] == "FAILED"
    assert done["statusDetails"]["step"] == "commit"
    assert "rolled back" in done["statusDetails"]["reason"]
    assert "camera pipeline did not start" in done["statusDetails"]["reason"]
    assert done["statusDetails"]["version"] == "1.0.0"
    assert slots.software_version(layout) == "1.0.0"


def test_tampered_download_is_refused_before_install(
        mqtt_broker: MqttLab, tmp_path: Path, bundle_server, daemon_procs) -> None:
    key = new_key()
    layout = device_with_daemon(mqtt_broker, tmp_path / "dev", "jobs-tamper-01", key,
                                daemon_procs)
    service = JobsService(mqtt_broker, "jobs-tamper-01")
    folder, base = bundle_server
    document = publish_bundle(folder, base, make_bundle(key), "os.bundle")
    (folder / "os.bundle").write_bytes(b"not the bundle the job names")
    service.add_job("r-tamper-1", document)

    _, done = service.updates.wait_for(lambda t, m: m["status"] in ("SUCCEEDED", "FAILED"), 30)
    assert done["status"] == "FAILED" and done["statusDetails"]["code"] == "checksum"
    assert slots.read_state(layout)["state"] == "idle"
    assert slots.software_version(layout) == "1.0.0"
