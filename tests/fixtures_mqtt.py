"""A real mosquitto broker with mutual TLS for tests (session scope), and helpers.

Usage in a test module (tests/ is on sys.path; add it first from a subfolder)::

    from fixtures_mqtt import Inbox, MqttLab, mqtt_broker  # noqa: F401  (fixture)

    def test_x(mqtt_broker: MqttLab, tmp_path):
        layout = mqtt_broker.device(tmp_path / "dev", "berlin-01", "berlin")  # identity + mqtt.json
        inbox = Inbox()
        reader = mqtt_broker.client()                   # the controller: reads edgefleet/#
        reader.subscribe("edgefleet/+/+/health", inbox)
        device = mqtt_broker.client("berlin-01")        # a device identity (CN = name)
        device.publish("edgefleet/berlin/berlin-01/health", {"seq": 1})
        inbox.wait_for(lambda t, m: m["seq"] == 1)      # waits on an event, bounded

The broker is `fleet.broker.Broker` (the same config `fleet lab up --mqtt` uses):
its own CA (EC P-256, made with `cryptography`), CN = username = client id on
the device listener, the device ACL (a device writes only under
``edgefleet/+/<CN>/#`` and ``$aws/things/<CN>/#``), and the controller on a
listener of its own. Clients made here are disconnected at the end of the
session; one device certificate holds one session at a time.
"""

from __future__ import annotations

import itertools
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ci_skips import in_ci
from fleet_runtime.layout import Layout, atomic_write_json
from fleet_runtime.mqtt import MqttClient, MqttSettings

from fleet.broker import CONTROLLER_CLIENT_PREFIX, Broker, BrokerState, Identity, mqtt_settings
from fleet.heartbeats import controller_settings

HAVE_MOSQUITTO = bool(shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists())
_ids = itertools.count(1)


def require_mosquitto() -> None:
    if not HAVE_MOSQUITTO:
        if in_ci():
            pytest.fail("mosquitto is required in CI (scripts/system-deps.sh installs it)")
        pytest.skip("mosquitto not installed (apt-get install mosquitto)")


class Inbox:
    """A subscription handler that records messages and lets a test wait for one."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._cond = threading.Condition()

    def __call__(self, topic: str, message: dict[str, Any]) -> None:
        with self._cond:
            self.messages.append((topic, message))
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[str, dict[str, Any]], bool],
                 timeout: float = 15.0) -> tuple[str, dict[str, Any]]:
        """The first message (already received or arriving) matching `predicate`."""
        with self._cond:
            found = self._cond.wait_for(
                lambda: next(((t, m) for t, m in self.messages if predicate(t, m)), None),
                timeout)
        if found is None:
            raise AssertionError(f"no matching MQTT message within {timeout}s; "
                                 f"got {[t for t, _ in self.messages]}")
        return found

    def topics(self) -> list[str]:
        with self._cond:
            return [t for t, _ in self.messages]


@dataclass
class MqttLab:
    broker: Broker
    state: BrokerState
    ids_dir: Path
    clients: list[MqttClient] = field(default_factory=list)

    @property
    def controller_identity(self) -> Identity:
        return Identity(Path(self.state.controller_cert), Path(self.state.controller_key),
                        Path(self.state.ca))

    def identity(self, cn: str) -> Identity:
        """A client certificate with CN `cn`, signed by the broker's CA."""
        return self.broker.ca.issue(cn, self.ids_dir, stem=f"{cn}-{next(_ids)}")

    def settings(self, identity: Identity, **extra: Any) -> MqttSettings:
        return MqttSettings(endpoint=self.state.host, port=self.state.port,
                            cert=str(identity.cert), key=str(identity.key),
                            ca=str(identity.ca), **extra)

    def client(self, cn: str = "controller", client_id: str | None = None) -> MqttClient:
        """``"controller"``: the controller's own identity on its listener; anything else a
        device certificate with that CN on the device listener (where the broker makes the
        client id the CN, whatever `client_id` asks for)."""
        if cn == "controller":
            settings = controller_settings(self.state)
            client_id = client_id or f"{CONTROLLER_CLIENT_PREFIX}test-{next(_ids)}"
        else:
            settings = self.settings(self.identity(cn))
        client = MqttClient.connect(settings, client_id or f"{cn}-test-{next(_ids)}")
        self.clients.append(client)
        return client

    def device(self, root: Path, name: str, site: str, interval: float = 0.5) -> Layout:
        """A device root with identity, an MQTT certificate and ``etc/fleet/mqtt.json``."""
        layout = Layout(root)
        layout.etc.mkdir(parents=True, exist_ok=True)
        atomic_write_json(layout.device_json, {"name": name, "site": site, "serial": "T" + name})
        identity = self.broker.ca.issue(name, layout.etc, stem="mqtt")
        atomic_write_json(layout.etc / "mqtt.json", mqtt_settings(self.state, identity, interval))
        return layout


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MqttLab]:
    """One mosquitto (mutual TLS, ACL by CN) for the whole session; stopped by PID."""
    require_mosquitto()
    base = tmp_path_factory.mktemp("mqtt")
    broker = Broker(base / "broker")
    lab = MqttLab(broker, broker.start(), base / "ids")
    yield lab
    for client in lab.clients:
        client.disconnect()
    broker.stop()
