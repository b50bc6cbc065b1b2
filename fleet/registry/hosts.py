"""Turn inventory hosts into registry device fields (pure; no database here).

Accepts what callers have at hand: a Nornir object, its ``inventory.hosts``
mapping, an iterable of Nornir ``Host`` objects, or plain dicts with ``name``.
Inventory tags (``canary``, ``ring=2``) become ``{"canary": "", "ring": "2"}``.
The host key fingerprint comes from the pinned key in ``.fleet/known_hosts``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def parse_tags(items: Iterable[str]) -> dict[str, str]:
    """``["canary", "ring=2"]`` -> ``{"canary": "", "ring": "2"}``."""
    out: dict[str, str] = {}
    for item in items:
        key, _, value = str(item).partition("=")
        if key.strip():
            out[key.strip()] = value.strip()
    return out


def _host_list(source: Any) -> list[Any]:
    inventory = getattr(source, "inventory", None)
    if inventory is not None:
        source = inventory.hosts
    if isinstance(source, Mapping):
        return list(source.values())
    return list(source)


def _fields_of(host: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(host, Mapping):
        data = dict(host.get("data") or host)
        name, hostname, port = str(host["name"]), host.get("hostname"), host.get("port")
    else:
        data = dict(host.data.items()) if hasattr(host.data, "items") else dict(host.data)
        name, hostname, port = host.name, host.hostname, host.port
    fields = {
        "site": data.get("site"),
        "serial": data.get("serial"),
        "hardware": data.get("hardware"),
        "arch": data.get("arch"),
        "hostname": hostname,
        "port": int(port or 22),
        "tags": parse_tags(data.get("tags") or ()),
    }
    return name, fields


def host_key_fingerprint(known_hosts: Path | None, hostname: str | None, port: int) -> str | None:
    """OpenSSH-style ``SHA256:...`` of the pinned host key, or None when none is pinned."""
    if not known_hosts or not hostname or not known_hosts.exists():
        return None
    from paramiko.hostkeys import HostKeys

    from fleet.transport import fingerprint, known_hosts_name

    entry = HostKeys(str(known_hosts)).lookup(known_hosts_name(hostname, port))
    return fingerprint(next(iter(entry.values()))) if entry else None


def entries(source: Any, known_hosts: Path | None) -> list[tuple[str, dict[str, Any]]]:
    """``(name, fields)`` for every host, with the pinned host key fingerprint when known."""
    out = []
    for host in _host_list(source):
        name, fields = _fields_of(host)
        fingerprint = host_key_fingerprint(known_hosts, fields["hostname"], fields["port"])
        if fingerprint:
            fields["host_key_fingerprint"] = fingerprint
        out.append((name, {k: v for k, v in fields.items() if v is not None}))
    return out
