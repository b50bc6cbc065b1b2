"""Parsed inventory data, the Nornir inventory plugin that builds hosts from it, and its cache.

Every source (the YAML folder, the registry) produces one `InventoryData`: the
``hosts``, ``groups`` and ``defaults`` documents as plain dicts in Nornir's
SimpleInventory layout. `FleetInventory` turns that into Nornir objects without
reading any file again, so an inventory is parsed once per command.

A validated YAML inventory is also kept as JSON under ``.fleet/cache/``, keyed
by a digest of the files' bytes (and of the schemas): a command on an unchanged
10,000-device inventory then reads JSON instead of parsing YAML. Any change to
a file changes the digest, so a stale entry is never used.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nornir.core.inventory import (
    ConnectionOptions,
    Defaults,
    Group,
    Groups,
    Host,
    Hosts,
    Inventory,
    ParentGroups,
)
from nornir.core.plugins.inventory import InventoryPluginRegister

from fleet.errors import ConfigError

PLUGIN_NAME = "FleetInventory"
CACHE_FORMAT = 1  # bump when what a cached entry means changes


@dataclass(frozen=True)
class InventoryData:
    """The three inventory documents, plain dicts in SimpleInventory's layout."""

    hosts: dict[str, Any]
    groups: dict[str, Any]
    defaults: dict[str, Any]


class FleetInventory:
    """Nornir inventory plugin over already-parsed `InventoryData` (no file reads)."""

    def __init__(self, data: InventoryData) -> None:
        self.data = data

    def load(self) -> Inventory:
        raw = self.data
        defaults = Defaults(**_fields(raw.defaults),
                            connection_options=_connections(raw.defaults))
        groups = Groups()
        for name, spec in raw.groups.items():
            groups[name] = Group(name=name, defaults=defaults, **_fields(spec or {}),
                                 connection_options=_connections(spec or {}))
        for name, group in groups.items():
            group.groups = _parents(groups, raw.groups[name] or {}, f"group {name}")
        hosts = Hosts()
        for name, spec in raw.hosts.items():
            host = Host(name=name, defaults=defaults, **_fields(spec),
                        connection_options=_connections(spec))
            host.groups = _parents(groups, spec, f"device {name}")
            hosts[name] = host
        return Inventory(hosts=hosts, groups=groups, defaults=defaults)


InventoryPluginRegister.register(PLUGIN_NAME, FleetInventory)


def _fields(spec: dict[str, Any]) -> dict[str, Any]:
    return {"hostname": spec.get("hostname"), "port": spec.get("port"),
            "username": spec.get("username"), "password": spec.get("password"),
            "platform": spec.get("platform"), "data": spec.get("data")}


def _connections(spec: dict[str, Any]) -> dict[str, ConnectionOptions]:
    out = {}
    for name, opts in (spec.get("connection_options") or {}).items():
        opts = opts or {}
        out[name] = ConnectionOptions(
            hostname=opts.get("hostname"), port=opts.get("port"), username=opts.get("username"),
            password=opts.get("password"), platform=opts.get("platform"),
            extras=opts.get("extras"))
    return out


def _parents(groups: Groups, spec: dict[str, Any], who: str) -> ParentGroups:
    names = spec.get("groups") or []
    unknown = [n for n in names if n not in groups]
    if unknown:
        raise ConfigError(f"{who} names unknown group(s) {', '.join(map(repr, unknown))}",
                          fix="define them in groups.yaml")
    return ParentGroups([groups[n] for n in names])


def digest(texts: dict[str, str | None], salt: str) -> str:
    """A key for the files' contents (None: file absent) and what reading them means."""
    h = hashlib.sha256(f"edgefleet-inventory/{CACHE_FORMAT}\0{salt}\0".encode())
    for name, text in sorted(texts.items()):
        h.update(name.encode() + b"\0")
        h.update(b"-\0" if text is None else f"{len(text)}\0".encode() + text.encode())
    return h.hexdigest()


def _cache_path(cache_dir: Path, directory: Path) -> Path:
    tag = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
    return cache_dir / f"inventory-{tag}.json"


def cached(cache_dir: Path, directory: Path, key: str) -> InventoryData | None:
    """The cached data for `directory` when it was stored under `key`, else None."""
    try:
        doc = json.loads(_cache_path(cache_dir, directory).read_bytes())
        if doc.get("key") != key:
            return None
        return InventoryData(doc["hosts"], doc["groups"], doc["defaults"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing or damaged: parse the files


def store(cache_dir: Path, directory: Path, key: str, data: InventoryData) -> None:
    """Keep `data` for the next command; a read-only project simply goes without."""
    from fleet_runtime.layout import atomic_write

    body = {"key": key, "hosts": data.hosts, "groups": data.groups, "defaults": data.defaults}
    try:
        cache_dir.mkdir(mode=0o700, exist_ok=True)
        atomic_write(_cache_path(cache_dir, directory),
                     json.dumps(body, separators=(",", ":")).encode(), 0o600)
    except OSError:
        pass

