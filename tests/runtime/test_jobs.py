"""The device's IoT Jobs handler, run by the real `fleet-agent daemon` over mutual TLS.

The broker is a real mosquitto and the service a stand-in on the documented
topics (see fixtures_jobs). A job drives the device-side update flow
(fleet_runtime.flow): it succeeds only past the self-test and health gate.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for fixtures

import fixtures_mqtt  # noqa: E402
from fixtures_bundle import make_bundle, new_key  # noqa: E402
from fixtures_jobs import (  # noqa: E402,F401  (fixtures used by name)
    JobsService,
    bundle_server,
    daemon_procs,
    device_with_daemon,
    failing_app,
    publish_bundle,
    statuses,
    unhealthy_bundle,
)
from fixtures_mqtt import MqttLab  # noqa: E402
from fleet_runtime import flow, slots  # noqa: E402

mqtt_broker = fixtures_mqtt.mqtt_broker  # the session fixture, used by name below
SELFTEST_FAILS = b"#!/bin/sh\necho 'camera pipeline did not start' >&2\nexit 1\n"


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
    assert done["statusDetails"]["code"] == "selftest-failed"
    assert "rolled back" in done["statusDetails"]["reason"]
    assert "camera pipeline did not start" in done["statusDetails"]["reason"]
    assert done["statusDetails"]["version"] == "1.0.0"
    assert_rolled_back(layout)


def assert_rolled_back(layout) -> None:
    """Back on the factory slot, committed; the new slot marked failed, never committed."""
    state = slots.read_state(layout)
    assert slots.software_version(layout) == "1.0.0" and state["state"] == "idle"
    assert state["committed_slot"] == state["active"] == "a"
    assert state["slots"]["b"]["status"] == "failed" and not state["slots"]["b"]["committed"]
    assert flow.read(layout)["state"] == "failed"


def test_release_that_boots_but_is_unhealthy_is_rolled_back_not_committed(
        mqtt_broker: MqttLab, tmp_path: Path, bundle_server, daemon_procs, failing_app) -> None:
    """Its self-test passes, but once booted its application reports failed: the health gate
    (the verdict the controller's push rollout refuses) must stop the commit."""
    key = new_key()
    layout = device_with_daemon(mqtt_broker, tmp_path / "dev", "jobs-sick-01", key,
                                daemon_procs)
    service = JobsService(mqtt_broker, "jobs-sick-01")
    folder, base = bundle_server
    data = unhealthy_bundle(key, failing_app)
    service.add_job("r-sick-1", publish_bundle(folder, base, data, "sick.bundle"))

    _, done = service.updates.wait_for(lambda t, m: m["status"] in ("SUCCEEDED", "FAILED"), 30)
    assert done["status"] == "FAILED", done
    details = done["statusDetails"]
    assert (details["step"], details["code"]) == ("commit", "unhealthy")
    assert "rolled back" in details["reason"]
    assert "detector model failed to load" in details["reason"]
    assert details["version"] == "1.0.0"
    assert_rolled_back(layout)


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
