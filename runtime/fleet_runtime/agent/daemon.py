"""`fleet-agent daemon`: heartbeats over MQTT (mutual TLS), and a home for the jobs handler.

    fleet-agent daemon [--interval SECONDS] [--once] [--settings PATH]

Reads ``etc/fleet/mqtt.json`` (see :mod:`fleet_runtime.mqtt`), connects with
the device certificate and every interval publishes the health summary (the
same checks as `fleet-agent health`):

* ``mode: broker`` (on-prem mosquitto): retained on ``<prefix>/<site>/<device>/health``;
* ``mode: iot-core``: the device shadow's reported state, ``{"state": {"reported":
  {"health": ...}}}`` on ``$aws/things/<thing>/shadow/update``.

The first connection is retried with backoff until it succeeds or the daemon
is stopped; later interruptions are healed by awscrt (subscriptions renewed).
SIGTERM/SIGINT stop it cleanly; it then prints the usual JSON object.
Status for people and the lab: ``run/fleet/daemon.json``; log: ``var/log/fleet/daemon.log``.

Jobs: when the module ``fleet_runtime.agent.jobs`` exists and has
``attach(client: MqttClient, layout: Layout, device: dict) -> None``, the
daemon calls it once connected; it subscribes what it needs (handlers run on
awscrt's threads) and returns. ``client.connection`` is the awscrt connection
for awsiot's IoT Jobs client.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import os
import signal
import threading
import time
from typing import Any

from fleet_runtime import logs
from fleet_runtime.agent import health
from fleet_runtime.agent.info import identity
from fleet_runtime.agent.protocol import AgentError
from fleet_runtime.durable import Backoff
from fleet_runtime.layout import Layout, atomic_write_json, read_json
from fleet_runtime.mqtt import (
    MqttClient,
    MqttError,
    MqttSettings,
    health_topic,
    shadow_update_topic,
)

JOBS_MODULE = "fleet_runtime.agent.jobs"
MAX_BACKOFF = 30.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("daemon", help="publish heartbeats over MQTT; run the jobs handler")
    p.add_argument("--interval", type=float, help="seconds between heartbeats (default: settings)")
    p.add_argument("--once", action="store_true", help="publish one heartbeat and exit")
    p.add_argument("--settings", help="MQTT settings file (default etc/fleet/mqtt.json)")
    p.set_defaults(handler=run)


def load_settings(layout: Layout, path: str | None) -> MqttSettings:
    file = layout.etc / "mqtt.json" if path is None else layout.root / path
    raw = read_json(file, default=None)
    if raw is None:
        raise AgentError("mqtt-not-configured",
                         f"no MQTT settings at {file}; provision the device "
                         "or run `fleet lab up --mqtt`")
    try:
        return MqttSettings.from_dict(raw)
    except MqttError as exc:
        raise AgentError("mqtt-bad-settings", f"{file}: {exc}") from None


def health_summary(layout: Layout, flags: list[str] | None = None) -> dict[str, Any]:
    """`fleet-agent health [flags]` (the fleet's thresholds, else the defaults), as a dict."""
    parser = argparse.ArgumentParser(add_help=False)
    health.register(parser.add_subparsers())
    try:
        args = parser.parse_args(["health", *(flags or [])])
    except SystemExit:  # thresholds this agent does not know: fall back to its defaults
        args = parser.parse_args(["health"])
    return health.run(args, layout)


def health_flags(layout: Layout, path: str | None) -> list[str]:
    """``health_args`` from the MQTT settings: the fleet.yaml thresholds the controller wrote."""
    file = layout.etc / "mqtt.json" if path is None else layout.root / path
    raw = read_json(file, default=None) or {}
    return [str(a) for a in raw.get("health_args") or []]


def heartbeat(layout: Layout, device: dict[str, Any], seq: int, interval: float,
              flags: list[str] | None = None) -> dict[str, Any]:
    report = health_summary(layout, flags)
    return {"device": device.get("name"), "site": device.get("site"), "seq": seq,
            "time": time.time(), "interval_s": interval, **report}


class Daemon:
    """The heartbeat loop; `stop` (from a signal) ends it at the next wait."""

    def __init__(self, layout: Layout, settings: MqttSettings, interval: float,
                 flags: list[str] | None = None) -> None:
        self.layout, self.settings, self.interval = layout, settings, interval
        self.flags = flags or []
        self.device = identity(layout)
        self.stopping = threading.Event()
        self.log = logs.device_logger(layout, "daemon")
        self.published = 0
        self.client: MqttClient | None = None

    def stop(self, *_: Any) -> None:
        self.stopping.set()

    def connect(self) -> MqttClient | None:
        """Connect, retrying with backoff (1, 2, 4 … 30 s) until connected or stopped."""
        backoff = Backoff(self.stopping, first=1.0, cap=MAX_BACKOFF)
        while not self.stopping.is_set():
            try:
                client = MqttClient.connect(self.settings, client_id=str(self.device["name"]))
            except MqttError as exc:
                self.status("connecting", error=str(exc))
                backoff.wait(functools.partial(self.log.warning, "%s; retrying in %.0fs", exc))
                continue
            self.log.info("connected to %s:%d", self.settings.endpoint, self.settings.port)
            return client
        return None

    def publish(self, client: MqttClient) -> None:
        beat = heartbeat(self.layout, self.device, self.published + 1, self.interval, self.flags)
        if self.settings.mode == "iot-core":
            thing = self.settings.thing_name or str(self.device["name"])
            client.publish(shadow_update_topic(thing), {"state": {"reported": {"health": beat}}})
        else:
            topic = health_topic(self.settings.topic_prefix, str(self.device.get("site")),
                                 str(self.device["name"]))
            client.publish(topic, beat, retain=True)
        self.published += 1
        self.status("connected", last_heartbeat=beat["time"], verdict=beat["verdict"])

    def status(self, state: str, **fields: Any) -> None:
        atomic_write_json(self.layout.run / "daemon.json", {
            "pid": os.getpid(), "state": state, "published": self.published,
            "interval_s": self.interval, "updated": time.time(), **fields})

    def loop(self, once: bool) -> None:
        self.client = self.connect()
        if self.client is None:
            return
        jobs = False
        while not self.stopping.is_set():
            # A jobs handler whose subscriptions failed (the broker restarted between the
            # connect and them, as for a new CRL, or refused them) is tried again at the
            # next beat; the failure is logged and the heartbeats go on.
            jobs = jobs or self.try_attach_jobs(self.client)
            try:
                self.publish(self.client)
            except MqttError as exc:  # broker away: awscrt reconnects, we try next beat
                self.log.warning("%s", exc)
                self.status("interrupted", error=str(exc))
            if once:
                break
            self.stopping.wait(self.interval)

    def try_attach_jobs(self, client: MqttClient) -> bool:
        """True once the jobs handler is attached (or this install has none)."""
        try:
            attach_jobs(client, self.layout, self.device, self.log)
        except MqttError as exc:
            self.log.warning("jobs handler not attached: %s; trying again at the next beat", exc)
            return False
        return True

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
        self.status("stopped")
        self.log.info("stopped after %d heartbeats", self.published)


def attach_jobs(client: MqttClient, layout: Layout, device: dict[str, Any],
                log: logging.Logger) -> bool:
    """Hand the connection to the jobs handler when this install has one."""
    try:
        module = importlib.import_module(JOBS_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name == JOBS_MODULE:
            return False
        raise
    attach = getattr(module, "attach", None)
    if attach is None:
        return False
    attach(client, layout, device)
    log.info("jobs handler attached")
    return True


def run(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    settings = load_settings(layout, args.settings)
    interval = float(args.interval or settings.heartbeat_s)
    if interval <= 0:
        raise AgentError("bad-interval", f"--interval {interval} must be positive")
    daemon = Daemon(layout, settings, interval, health_flags(layout, args.settings))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, daemon.stop)
    try:
        daemon.loop(args.once)
    finally:
        daemon.close()
    return {"published": daemon.published, "interval_s": interval, "mode": settings.mode}
