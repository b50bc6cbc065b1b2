"""`fleet-agent daemon` against a real mosquitto with mutual TLS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for fixtures_mqtt

from fixtures_mqtt import Inbox, MqttLab, mqtt_broker, require_mosquitto  # noqa: E402,F401
from fleet_runtime.agent import daemon as daemon_mod  # noqa: E402
from fleet_runtime.layout import Layout, atomic_write_json, read_json  # noqa: E402
from fleet_runtime.mqtt import MqttClient  # noqa: E402

from fleet.broker import Broker, mqtt_settings  # noqa: E402
from fleet.heartbeats import controller_client_id, controller_settings  # noqa: E402


def start_daemon(layout: Layout, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "fleet_runtime.agent.cli", "daemon", *args],
        env={**os.environ, "FLEET_ROOT": str(layout.root)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def stop(proc: subprocess.Popen[bytes]) -> dict:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


@pytest.fixture
def running() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def test_daemon_publishes_retained_heartbeats_until_stopped(
        mqtt_broker: MqttLab, tmp_path: Path, running: list) -> None:  # noqa: F811
    layout = mqtt_broker.device(tmp_path / "dev", "hb-01", "berlin", interval=0.3)
    settings = read_json(layout.etc / "mqtt.json")
    settings["health_args"] = ["--disk-warn", "100", "--disk-fail", "100", "--mem-warn", "100",
                               "--mem-fail", "100", "--load-warn", "1000"]  # host-proof
    atomic_write_json(layout.etc / "mqtt.json", settings)
    inbox = Inbox()
    mqtt_broker.client().subscribe("edgefleet/berlin/hb-01/health", inbox)
    running.append(proc := start_daemon(layout))
    topic, beat = inbox.wait_for(lambda t, m: m["seq"] >= 2)
    assert topic == "edgefleet/berlin/hb-01/health"
    assert beat["device"] == "hb-01" and beat["site"] == "berlin"
    assert beat["interval_s"] == 0.3 and beat["verdict"] == "healthy"
    assert {c["name"] for c in beat["checks"]} >= {"agent", "disk", "memory"}
    result = stop(proc)
    assert result["ok"] and result["published"] >= 2
    assert read_json(layout.run / "daemon.json")["state"] == "stopped"
    # Retained: a reader that arrives later still gets the latest heartbeat at once.
    late = Inbox()
    mqtt_broker.client().subscribe("edgefleet/+/hb-01/health", late)
    assert late.wait_for(lambda t, m: True)[1]["seq"] == result["published"]


def test_a_device_cannot_publish_another_devices_heartbeat(mqtt_broker: MqttLab) -> None:  # noqa: F811
    inbox = Inbox()
    mqtt_broker.client().subscribe("edgefleet/#", inbox)
    mallory = mqtt_broker.client("acl-mallory")
    mallory.publish("edgefleet/berlin/acl-victim/health", {"forged": True, "verdict": "healthy"})
    mallory.publish("$aws/things/acl-victim/shadow/update", {"forged": True})
    # Messages from one client arrive in order: once its own barrier is here, the
    # forged one would have been delivered before it if the broker had accepted it.
    mallory.publish("edgefleet/berlin/acl-mallory/health", {"barrier": True})
    inbox.wait_for(lambda t, m: m.get("barrier", False))
    assert "edgefleet/berlin/acl-victim/health" not in inbox.topics()
    assert not any(m.get("forged") for _, m in inbox.messages)


def test_daemon_reports_to_the_device_shadow_on_iot_core(
        mqtt_broker: MqttLab, tmp_path: Path) -> None:  # noqa: F811
    layout = mqtt_broker.device(tmp_path / "dev", "shadow-01", "lisbon")
    settings = read_json(layout.etc / "mqtt.json")
    atomic_write_json(layout.etc / "mqtt.json", {**settings, "mode": "iot-core",
                                                 "thing_name": "shadow-01"})
    inbox = Inbox()
    mqtt_broker.client().subscribe("$aws/things/shadow-01/shadow/update", inbox)
    proc = start_daemon(layout, "--once")
    out, err = proc.communicate(timeout=30)
    assert json.loads(out)["published"] == 1, err
    _, doc = inbox.wait_for(lambda t, m: True)
    assert doc["state"]["reported"]["health"]["device"] == "shadow-01"


def test_daemon_reconnects_after_the_broker_restarts(tmp_path: Path, running: list) -> None:
    require_mosquitto()
    broker = Broker(tmp_path / "own-broker")
    state = broker.start()
    try:
        layout = Layout(tmp_path / "dev")
        layout.etc.mkdir(parents=True)
        atomic_write_json(layout.device_json, {"name": "rc-01", "site": "osaka"})
        identity = broker.ca.issue("rc-01", layout.etc, stem="mqtt")
        atomic_write_json(layout.etc / "mqtt.json", mqtt_settings(state, identity, 0.3))
        controller = controller_settings(state)
        running.append(proc := start_daemon(layout))
        first = Inbox()
        reader = MqttClient.connect(controller, controller_client_id())
        reader.subscribe("edgefleet/osaka/rc-01/health", first)
        seen = first.wait_for(lambda t, m: True)[1]["seq"]
        reader.disconnect()
        broker.stop()
        broker.start(state.port, state.controller_port)  # same ports and CAs, no retained state
        second = Inbox()
        reader = MqttClient.connect(controller, controller_client_id())
        reader.subscribe("edgefleet/osaka/rc-01/health", second)
        assert second.wait_for(lambda t, m: m["seq"] > seen, timeout=30)
        reader.disconnect()
        stop(proc)
    finally:
        broker.stop()


def test_daemon_without_settings_says_how_to_configure(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "dev")
    layout.etc.mkdir(parents=True)
    atomic_write_json(layout.device_json, {"name": "x", "site": "y"})
    proc = start_daemon(layout, "--once")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    error = json.loads(out)["error"]
    assert error["code"] == "mqtt-not-configured" and "fleet lab up --mqtt" in error["message"]


def test_jobs_handler_is_attached_when_present(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    calls = []
    fake = types.ModuleType(daemon_mod.JOBS_MODULE)
    fake.attach = lambda client, layout, device: calls.append((client, device["name"]))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, daemon_mod.JOBS_MODULE, fake)
    log = daemon_mod.logs.device_logger(Layout(tmp_path), "daemon")
    assert daemon_mod.attach_jobs("client", Layout(tmp_path), {"name": "d1"}, log)
    assert calls == [("client", "d1")]


def test_no_jobs_module_means_heartbeats_only(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, daemon_mod.JOBS_MODULE, None)  # as if not installed
    log = daemon_mod.logs.device_logger(Layout(tmp_path), "daemon")
    assert daemon_mod.attach_jobs("client", Layout(tmp_path), {"name": "d1"}, log) is False


def test_heartbeats_use_the_fleet_thresholds_from_the_settings(
        mqtt_broker: MqttLab, tmp_path: Path) -> None:  # noqa: F811
    layout = mqtt_broker.device(tmp_path / "dev", "thr-01", "lima")
    settings = read_json(layout.etc / "mqtt.json")
    atomic_write_json(layout.etc / "mqtt.json",
                      {**settings, "health_args": ["--disk-warn", "0", "--disk-fail", "100",
                                                   "--mem-warn", "100", "--mem-fail", "100",
                                                   "--load-warn", "1000"]})
    inbox = Inbox()
    mqtt_broker.client().subscribe("edgefleet/lima/thr-01/health", inbox)
    proc = start_daemon(layout, "--once")
    proc.communicate(timeout=30)
    _, beat = inbox.wait_for(lambda t, m: True)
    disk = next(c for c in beat["checks"] if c["name"] == "disk")
    assert disk["status"] == "warn" and "warn 0%" in disk["reason"]
    assert beat["verdict"] == "degraded" and beat["reason"] == disk["reason"]


def test_jobs_subscriptions_that_fail_are_tried_again_not_fatal(
        mqtt_broker: MqttLab, tmp_path: Path) -> None:  # noqa: F811
    """The jobs handler's subscriptions can fail right after the connect (the broker
    restarting for a new CRL cancels them; CI saw the daemon exit on it). Attaching is
    then a logged miss that the loop tries again at the next beat, after the heartbeat,
    instead of an exception that ends the daemon."""
    layout = mqtt_broker.device(tmp_path / "dev", "jobs-01", "berlin", interval=0.3)
    settings = daemon_mod.load_settings(layout, None)
    daemon = daemon_mod.Daemon(layout, settings, 0.3)
    gone = MqttClient.connect(settings, "jobs-01")
    gone.disconnect()  # the connection the subscriptions were to go over is gone
    assert daemon.try_attach_jobs(gone) is False
    log = (layout.root / "var/log/fleet/daemon.log").read_text()
    assert "jobs handler not attached: subscribe to $aws/things/jobs-01/jobs/" in log
    assert "failed: TimeoutError" in log  # never an empty reason
    live = MqttClient.connect(settings, "jobs-01")
    try:
        assert daemon.try_attach_jobs(live) is True
    finally:
        live.disconnect()
