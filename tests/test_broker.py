"""MQTT identities on a real mosquitto (mutual TLS): roles cannot be borrowed by devices.

Issue 12.6: a device certificate named ``controller`` used to get the controller's
rights (read every heartbeat, publish on every device's jobs topic).
Issue 12.7: any device could connect with another device's client id, and the
broker dropped the victim's session.
"""

from __future__ import annotations

import contextlib

import pytest
from fixtures_mqtt import Inbox, MqttLab, mqtt_broker  # noqa: F401  (the session fixture)
from fleet_runtime.mqtt import MqttClient, MqttError

from fleet import broker as broker_mod
from fleet.heartbeats import controller_settings


def _device(lab: MqttLab, cn: str, client_id: str) -> MqttClient:
    """A device certificate with CN `cn` on the device listener, asking for `client_id`."""
    client = MqttClient.connect(lab.settings(lab.identity(cn)), client_id)
    lab.clients.append(client)
    return client


def test_a_device_named_controller_cannot_read_other_devices(
        mqtt_broker: MqttLab) -> None:  # noqa: F811
    victim = mqtt_broker.client("role-victim")
    victim.publish("edgefleet/berlin/role-victim/health", {"secret": "beat"}, retain=True)
    fake = _device(mqtt_broker, "controller", "controller")
    inbox = Inbox()
    with contextlib.suppress(MqttError):  # refused outright: as good as receiving nothing
        fake.subscribe("edgefleet/#", inbox)
    fake.subscribe("edgefleet/+/controller/jobs/#", inbox)
    # Retained messages are sent on subscribe, before anything published later: once
    # the barrier is here, the victim's heartbeat would have arrived if it were readable.
    mqtt_broker.client().publish("edgefleet/berlin/controller/jobs/barrier", {"barrier": True})
    inbox.wait_for(lambda t, m: m.get("barrier", False))
    assert "edgefleet/berlin/role-victim/health" not in inbox.topics()


def test_a_device_named_controller_cannot_send_jobs_to_other_devices(
        mqtt_broker: MqttLab) -> None:  # noqa: F811
    victim = mqtt_broker.client("jobs-victim")
    inbox = Inbox()
    victim.subscribe("edgefleet/+/jobs-victim/jobs/#", inbox)
    fake = _device(mqtt_broker, "controller", "controller")
    fake.publish("edgefleet/berlin/jobs-victim/jobs/evil", {"forged": True})  # acked: routed
    mqtt_broker.client().publish("edgefleet/berlin/jobs-victim/jobs/real", {"barrier": True})
    inbox.wait_for(lambda t, m: m.get("barrier", False))
    assert not any(m.get("forged") for _, m in inbox.messages)


def test_a_device_certificate_is_refused_on_the_controller_listener(
        mqtt_broker: MqttLab) -> None:  # noqa: F811
    identity = mqtt_broker.identity("sneaky")
    settings = controller_settings(mqtt_broker.state)
    device_on_controller_port = type(settings)(
        endpoint=settings.endpoint, port=settings.port, cert=str(identity.cert),
        key=str(identity.key), ca=str(identity.ca))
    with pytest.raises(MqttError):
        MqttClient.connect(device_on_controller_port, "sneaky", timeout=5)


def test_a_device_cannot_take_over_another_devices_session(
        mqtt_broker: MqttLab) -> None:  # noqa: F811
    victim = _device(mqtt_broker, "cid-victim", "cid-victim")
    reader = mqtt_broker.client()
    inbox = Inbox()
    reader.subscribe("edgefleet/+/cid-victim/health", inbox)
    _device(mqtt_broker, "cid-mallory", "cid-victim")  # connected: the broker has decided
    # The victim's own round trip: on a taken-over session it could only complete after
    # the broker dropped it and it reconnected, which sets `interrupted` first.
    victim.publish("edgefleet/berlin/cid-victim/health", {"after": True})
    inbox.wait_for(lambda t, m: m.get("after", False))
    assert not victim.interrupted.is_set() and not victim.resumed.is_set()


def test_the_controller_acl_is_not_on_the_device_listener() -> None:
    assert "user " not in broker_mod.acl_text()
    assert f"user {broker_mod.CONTROLLER_CN}" in broker_mod.controller_acl_text()
