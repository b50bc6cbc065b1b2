"""Fleet health from heartbeats: the latest MQTT heartbeat of every device, no SSH.

Device daemons publish their health summary, retained, on
``<prefix>/<site>/<device>/health``; subscribing hands us the latest one of
every device at once. To know when they have all arrived we publish a marker
on our own sync topic after subscribing: the broker delivers to us in order,
so once the marker is back, every retained heartbeat is too.

A heartbeat older than 3 intervals (its own ``interval_s``) means the device
is ``offline``; a device in the selection with no heartbeat at all too.

With ``mqtt: {mode: iot-core}`` in fleet.yaml the daemons report to their
device shadows on AWS IoT Core instead; we then read each shadow's
``reported.health`` with boto3 (``iot-data``; region and ``endpoint_url`` from
the same section or the environment).

>>> beats = latest(settings_for(project), ["berlin-01"])     # doctest: +SKIP
>>> to_health("berlin-01", "berlin", beats.get("berlin-01"), time.time()).verdict  # doctest: +SKIP
'healthy'
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fleet_runtime.mqtt import MqttClient, MqttError, MqttSettings, health_topic

from fleet.broker import CONTROLLER_CLIENT_PREFIX, SYNC_PREFIX, BrokerState, local_broker
from fleet.errors import ConfigError, DeviceError
from fleet.health import DeviceHealth, apply_revocations, apps_of
from fleet.project import Project

STALE_INTERVALS = 3
OFFLINE = "offline"


def settings_for(project: Project) -> MqttSettings:
    """The controller's broker settings: ``mqtt:`` in fleet.yaml, else the project's own
    broker (see fleet.broker.local_broker; `fleet lab up --mqtt` runs one)."""
    conf = dict(project.config.get("mqtt") or {})
    if conf.get("endpoint"):
        for key in ("cert", "key", "ca"):
            if conf.get(key):
                conf[key] = str((project.root / str(conf[key])).resolve())
        try:
            return MqttSettings.from_dict(conf)
        except MqttError as exc:
            raise ConfigError(str(exc), where="fleet.yaml: mqtt",
                              fix="set endpoint, port, cert, key and ca") from None
    broker = local_broker(project)
    state = broker.state() if broker is not None else None
    if state is None:
        raise ConfigError("no MQTT broker configured", where="fleet.yaml: mqtt",
                          fix="set mqtt.endpoint/cert/key/ca, or run `fleet lab up --mqtt`")
    return controller_settings(state)


def controller_settings(state: BrokerState) -> MqttSettings:
    """How the controller reaches the lab broker: its own listener and certificate."""
    return MqttSettings(endpoint=state.host, port=state.controller_port or state.port,
                        cert=state.controller_cert, key=state.controller_key, ca=state.ca)


def controller_client_id() -> str:
    """A fresh client id that no device can hold (a device's client id is its name)."""
    return f"{CONTROLLER_CLIENT_PREFIX}{uuid.uuid4().hex[:12]}"


class _Collector:
    def __init__(self) -> None:
        self.beats: dict[str, dict[str, Any]] = {}
        self.synced = threading.Event()
        self.lock = threading.Lock()

    def on_heartbeat(self, topic: str, beat: dict[str, Any]) -> None:
        device = topic.split("/")[-2]
        with self.lock:
            kept = self.beats.get(device)
            # a malformed beat is kept only when there is nothing better: to_health reports it
            if kept is None or _malformed(kept) or (
                    not _malformed(beat) and beat.get("time", 0) >= kept.get("time", 0)):
                self.beats[device] = beat

    def on_sync(self, topic: str, message: dict[str, Any]) -> None:
        self.synced.set()


def latest(settings: MqttSettings, *, timeout: float = 10.0) -> dict[str, dict[str, Any]]:
    """Every device's latest retained heartbeat, by device name."""
    marker = f"{SYNC_PREFIX}/{uuid.uuid4().hex}"
    collector = _Collector()
    try:
        client = MqttClient.connect(settings, client_id=controller_client_id(),
                                    timeout=timeout)
    except MqttError as exc:
        raise DeviceError(str(exc), fix="check the broker is up (`fleet lab up --mqtt`)") from None
    try:
        client.subscribe(health_topic(settings.topic_prefix, "+", "+"), collector.on_heartbeat)
        client.subscribe(marker, collector.on_sync)
        client.publish(marker, {"sync": True})
        if not collector.synced.wait(timeout):
            raise DeviceError(f"no answer from the MQTT broker within {timeout:.0f}s",
                              fix="check the broker and the controller certificate")
    except MqttError as exc:
        raise DeviceError(str(exc), fix="check the controller certificate and the ACL") from None
    finally:
        client.disconnect()
    with collector.lock:
        return dict(collector.beats)


def age_reason(age: float) -> str:
    return f"last heartbeat {age:.0f}s ago" if age < 120 else \
        f"last heartbeat {age / 60:.0f} min ago"


def _malformed(beat: Any) -> str | None:
    """What is wrong with a heartbeat's shape, or None."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v  # not NaN

    fields: dict[str, Callable[[Any], bool]] = {
        "time": number,
        "interval_s": lambda v: v is None or (number(v) and v > 0),
        "checks": lambda v: v is None or (isinstance(v, list)
                                          and all(isinstance(c, dict) for c in v)),
        "verdict": lambda v: isinstance(v, str),
        "reason": lambda v: isinstance(v, str),
        "software": lambda v: v is None or isinstance(v, str),
        "slot": lambda v: v is None or isinstance(v, str),
    }
    if not isinstance(beat, dict):
        return "not an object"
    if beat.get("malformed") is True:
        return "not JSON"
    bad = [key for key, ok in fields.items() if key in beat and not ok(beat[key])]
    return f"{', '.join(bad)} of the wrong type" if bad else None


def to_health(name: str, site: str, beat: dict[str, Any] | None, now: float) -> DeviceHealth:
    """One device's health from its heartbeat; stale (> 3 intervals) or none is offline."""
    if beat is None:
        return DeviceHealth(name, site, OFFLINE, "no heartbeat received")
    if problem := _malformed(beat):  # a device writes its own heartbeat: trust no field of it
        return DeviceHealth(name, site, OFFLINE, f"malformed heartbeat: {problem}")
    age = now - float(beat.get("time", 0))
    interval = float(beat.get("interval_s") or 30)
    checks = list(beat.get("checks") or [])
    checks.append({"name": "heartbeat", "status": "ok" if age <= STALE_INTERVALS * interval
                   else "fail", "age_s": round(age, 1), "seq": beat.get("seq"),
                   "interval_s": interval, "reason": age_reason(age)})
    if age > STALE_INTERVALS * interval:
        return DeviceHealth(name, site, OFFLINE, age_reason(age), beat.get("software"),
                            beat.get("slot"), checks)
    return DeviceHealth(name, site, str(beat.get("verdict", "degraded")),
                        str(beat.get("reason", "")), beat.get("software"), beat.get("slot"),
                        checks, apps_of(checks))


def shadow_heartbeat(client: Any, thing: str) -> dict[str, Any] | None:
    """``state.reported.health`` of one device shadow, or None when it has none."""
    try:
        payload = client.get_thing_shadow(thingName=thing)["payload"].read()
    except client.exceptions.ResourceNotFoundException:
        return None
    try:
        doc = json.loads(payload)
    except ValueError:
        return {"malformed": True}  # to_health reports it; one device does not stop the sweep
    for key in ("state", "reported", "health"):
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc if isinstance(doc, dict) else None


def latest_from_shadows(conf: dict[str, Any], names: list[str]) -> dict[str, dict[str, Any]]:
    """The heartbeats the devices reported to their AWS IoT Core shadows (in parallel)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client("iot-data", region_name=conf.get("region"),
                          endpoint_url=conf.get("endpoint_url"))
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            beats = list(pool.map(lambda n: shadow_heartbeat(client, n), names))
        found = dict(zip(names, beats, strict=True))
    except (BotoCoreError, ClientError) as exc:
        raise DeviceError(f"cannot read device shadows: {exc}",
                          fix="check AWS credentials, region and mqtt.endpoint_url") from None
    return {name: beat for name, beat in found.items() if beat is not None}


def sweep(project: Project, hosts: Iterable[tuple[str, str]], *,
          now: float | None = None) -> list[DeviceHealth]:
    """DeviceHealth for every (name, site) from the latest heartbeats."""
    hosts = list(hosts)
    conf = dict(project.config.get("mqtt") or {})
    if conf.get("mode") == "iot-core":
        beats = latest_from_shadows(conf, [name for name, _ in hosts])
    else:
        beats = latest(settings_for(project))
    moment = time.time() if now is None else now
    reports = [to_health(name, site, beats.get(name), moment) for name, site in hosts]
    apply_revocations(project, [r for r in reports if r.verdict != OFFLINE])
    return sorted(reports, key=lambda r: (r.site, r.name))
