"""Everything the console's routes share: the project, sessions, the device index,
the health board, snapshots and the templates."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

import jinja2

from fleet.console.devices import DeviceIndex
from fleet.console.health_board import HealthBoard, Poller
from fleet.console.remote import Snapshots, scrub_urls, sweep
from fleet.console.security import LoginLimiter, Sessions
from fleet.project import Project
from fleet.registry import Registry, open_registry


@dataclass(frozen=True)
class Settings:
    secure: bool = False          # served over TLS: cookies get the Secure flag
    loopback_only: bool = True    # listening on loopback: Host must be a loopback name
    host: str = "127.0.0.1"       # the address served on (also a fine Host header)
    health_every: float = 60.0    # seconds between health sweeps; 0: none
    health_source: str = "ssh"    # ssh | mqtt


class ConsoleState:
    def __init__(self, project: Project, settings: Settings) -> None:
        self.project, self.settings = project, settings
        self.sessions = Sessions()
        self.limiter = LoginLimiter()
        self.board = HealthBoard()
        self.index = DeviceIndex(project, self._read_devices)
        self.snapshots = Snapshots(project)
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("fleet.console", "templates"),
            autoescape=True,  # every value is escaped: device text comes from the field
            undefined=jinja2.StrictUndefined)
        self.templates.filters["timestamp"] = lambda t: time.strftime(
            "%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))
        self.poller: Poller | None = None

    def start(self) -> None:
        if self.settings.health_every > 0:
            self.poller = Poller(self.board, lambda: sweep(self.project,
                                                           self.settings.health_source),
                                 self.settings.health_every)
            self.poller.start()

    def stop(self) -> None:
        if self.poller is not None:
            self.poller.stopping.set()

    @contextmanager
    def registry(self) -> Iterator[Registry]:
        registry = open_registry(self.project)
        try:
            yield registry
        finally:
            registry.close()

    def _read_devices(self) -> list[dict[str, Any]]:
        with self.registry() as registry:
            return registry.list_devices()

    def cameras(self, **filters: Any) -> list[dict[str, Any]]:
        with self.registry() as registry:
            return [public_camera(c) for c in registry.list_cameras(**filters)]


def public_camera(record: dict[str, Any]) -> dict[str, Any]:
    """A camera record fit for a browser: no password field at all (not even masked),
    no user:password@ inside the stream URL, and the password nowhere else either (some
    cameras take it in the URL's query, a probe's detail may quote the URL)."""
    secret = str(record.get("password") or "")
    forms = [f for f in {secret, quote(secret, safe=""), quote_plus(secret)} if f]
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "password":
            continue
        if isinstance(value, str):
            value = scrub_urls(value)
            for form in forms:
                value = value.replace(form, "***")
        out[key] = value
    out["rtsp_url"] = strip_userinfo(str(out.get("rtsp_url") or ""))
    return out


def strip_userinfo(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
