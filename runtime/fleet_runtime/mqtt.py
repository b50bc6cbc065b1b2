"""MQTT over mutual TLS with awsiotsdk (the runtime's ``mqtt`` extra), for both halves.

One small client (:class:`MqttClient`) that the device daemon and the
controller's heartbeat reader share: connect with a certificate, publish JSON,
subscribe with a callback that gets parsed JSON. awscrt reconnects by itself
after an interruption; the first connection is retried by the caller.

Settings (``etc/fleet/mqtt.json`` on a device, the ``mqtt:`` section of
``fleet.yaml`` on the controller)::

    {"mode": "broker" | "iot-core", "endpoint": "127.0.0.1", "port": 8883,
     "ca": "...", "cert": "...", "key": "...", "topic_prefix": "edgefleet",
     "heartbeat_s": 30, "thing_name": "<device name>"}

Topics: heartbeats go to ``<prefix>/<site>/<device>/health`` (retained, so a
reader gets every device's latest at once) on a broker, or to the device
shadow's reported state (``$aws/things/<thing>/shadow/update``) on AWS IoT Core.

>>> client = MqttClient.connect(settings, client_id="berlin-01")   # doctest: +SKIP
>>> topic = "edgefleet/berlin/berlin-01/health"
>>> client.publish(topic, {"verdict": "healthy"}, retain=True)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TOPIC_PREFIX = "edgefleet"
DEFAULT_PORT = 8883
Handler = Callable[[str, dict[str, Any]], None]


class MqttError(Exception):
    """A connection, publish or subscribe that failed; the message says which and why."""


@dataclass(frozen=True)
class MqttSettings:
    endpoint: str
    cert: str
    key: str
    ca: str | None = None
    port: int = DEFAULT_PORT
    mode: str = "broker"
    topic_prefix: str = TOPIC_PREFIX
    heartbeat_s: float = 30.0
    thing_name: str | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MqttSettings:
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        missing = [k for k in ("endpoint", "cert", "key") if not known.get(k)]
        if missing:
            raise MqttError(f"MQTT settings lack {', '.join(missing)}")
        if known.get("mode", "broker") not in ("broker", "iot-core"):
            raise MqttError(f"MQTT mode {known['mode']!r} is neither 'broker' nor 'iot-core'")
        return cls(**known)


def health_topic(prefix: str, site: str, device: str) -> str:
    return f"{prefix}/{site}/{device}/health"


def shadow_update_topic(thing: str) -> str:
    return f"$aws/things/{thing}/shadow/update"


class MqttClient:
    """A connected awscrt MQTT 3.1.1 connection with JSON publish/subscribe."""

    def __init__(self, connection: Any, client_id: str) -> None:
        self.connection = connection  # awscrt.mqtt.Connection, for awsiot's Jobs/Shadow clients
        self.client_id = client_id
        self.interrupted = threading.Event()
        self.resumed = threading.Event()

    @classmethod
    def connect(cls, settings: MqttSettings, client_id: str, *, timeout: float = 10.0,
                keep_alive_s: int = 30) -> MqttClient:
        """Connect with the settings' certificate; raises MqttError when it cannot."""
        try:
            from awscrt import exceptions
            from awsiot import mqtt_connection_builder
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise MqttError("awsiotsdk is not installed; pip install 'edgefleet-runtime[mqtt]'") \
                from exc
        holder: dict[str, MqttClient] = {}
        connection = mqtt_connection_builder.mtls_from_path(
            endpoint=settings.endpoint, port=settings.port, cert_filepath=settings.cert,
            pri_key_filepath=settings.key, ca_filepath=settings.ca, client_id=client_id,
            clean_session=True, keep_alive_secs=keep_alive_s,
            reconnect_min_timeout_secs=1, reconnect_max_timeout_secs=30,
            on_connection_interrupted=lambda **kw: holder["c"]._on_interrupted(),
            on_connection_resumed=lambda **kw: holder["c"]._on_resumed(**kw),
        )
        client = holder["c"] = cls(connection, client_id)
        try:
            connection.connect().result(timeout)
        except (exceptions.AwsCrtError, TimeoutError, OSError) as exc:
            raise MqttError(f"cannot connect to {settings.endpoint}:{settings.port} "
                            f"as {client_id}: {exc}") from None
        return client

    def _on_interrupted(self) -> None:
        self.resumed.clear()
        self.interrupted.set()

    def _on_resumed(self, session_present: bool = False, **_: Any) -> None:
        # A clean session forgets subscriptions across a reconnect: renew them.
        if not session_present:
            self.connection.resubscribe_existing_topics()
        self.interrupted.clear()
        self.resumed.set()

    def publish(self, topic: str, payload: dict[str, Any], *, retain: bool = False,
                timeout: float = 10.0) -> None:
        """Publish JSON at QoS 1 and wait for the broker's acknowledgement."""
        from awscrt import mqtt

        body = json.dumps(payload, sort_keys=True, default=str)
        future, _ = self.connection.publish(topic, body, mqtt.QoS.AT_LEAST_ONCE, retain=retain)
        try:
            future.result(timeout)
        except Exception as exc:  # noqa: BLE001 - awscrt raises several kinds
            raise MqttError(f"publish to {topic} failed: {str(exc) or type(exc).__name__}") from None

    def subscribe(self, topic: str, handler: Handler, *, timeout: float = 10.0) -> None:
        """Subscribe at QoS 1; `handler(topic, payload)` runs on awscrt's thread."""
        from awscrt import mqtt

        def on_message(topic: str, payload: bytes, **kwargs: Any) -> None:
            try:
                message = json.loads(payload)
            except ValueError:
                return
            if isinstance(message, dict):
                handler(topic, message)

        future, _ = self.connection.subscribe(topic, mqtt.QoS.AT_LEAST_ONCE, on_message)
        try:
            result = future.result(timeout)
        except Exception as exc:  # noqa: BLE001
            raise MqttError(f"subscribe to {topic} failed: {str(exc) or type(exc).__name__}") from None
        if result.get("qos") is None:
            raise MqttError(f"subscribe to {topic} was refused by the broker")

    def disconnect(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(Exception):  # closing anyway
            self.connection.disconnect().result(timeout)
