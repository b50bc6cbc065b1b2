"""Device registration and deregistration: the steps around the store.

`register` records every selected inventory host (idempotent) and, when the
fleet CA has issued the device a certificate (``certs/devices/<name>.crt``),
its fingerprint (the aws backend also registers it in IoT with its policy).
`deregister` revokes the device's certificate with the fleet CA
(`fleet.pki`, when the project has one), removes the device from the store
(history stays) and unpins its SSH host key from ``.fleet/known_hosts``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from fleet.errors import ConfigError
from fleet.project import Project
from fleet.registry import NotFound, Store


def _pki() -> Any:
    """fleet.pki when it is installed (imported lazily: it is optional for the registry)."""
    if importlib.util.find_spec("fleet.pki") is None:
        return None
    import fleet.pki

    return fleet.pki


def issued_certificate(project: Project, name: str) -> Path | None:
    """The device certificate the fleet CA issued to `name`, if there is one on disk."""
    path = project.certs / "devices" / f"{name}.crt"
    return path if path.exists() else None


def register(project: Project, registry: Store, nornir_or_hosts: Any) -> dict[str, Any]:
    """Register the hosts and record their certificates; returns created/updated/unchanged."""
    result = registry.register_from_inventory(nornir_or_hosts)
    certificates = []
    for name in result.created + result.updated + result.unchanged:
        cert = issued_certificate(project, name)
        device = registry.get_device(name) or {}
        if cert is None:
            continue
        pem = cert.read_text(encoding="ascii")
        from fleet.registry.sqlite import certificate_fingerprint

        if device.get("cert_fingerprint") != certificate_fingerprint(pem):
            registry.set_device_certificate(name, pem)
            certificates.append(name)
    return {**result.as_dict(), "certificates": certificates}


def _issued_serials(pki: Any, project: Project, name: str) -> list[str]:
    paths = pki.ca_paths(project)
    return [r["serial"] for r in pki.issued_records(paths) if r.get("device") == name]


def _revoker(project: Project, name: str, passphrase: bytes | None) -> Any:
    """The unlocked fleet CA when `name` has certificates to revoke, else None.
    Unlocking happens before anything changes, so a wrong passphrase changes nothing."""
    pki = _pki()
    if pki is None or not hasattr(pki, "load_ca") or not (project.certs / "ca.crt").exists():
        return None
    if not _issued_serials(pki, project, name):
        return None
    return pki.load_ca(project, passphrase)


def deregister(
    project: Project,
    registry: Store,
    name: str,
    *,
    passphrase: bytes | None,
    remove_cameras: bool = False,
) -> dict[str, Any]:
    """Revoke, remove from the store (keeping history), unpin the host key."""
    device = registry.get_device(name)
    if device is None:
        raise NotFound(f"device '{name}' is not registered", fix="see `fleet devices list`")
    if device["cameras"] and not remove_cameras:
        raise ConfigError(
            f"device '{name}' still has {device['cameras']} camera(s)",
            fix="remove them first or pass --remove-cameras",
        )
    ca = _revoker(project, name, passphrase)
    revoked = ca.revoke(name, reason="cessationOfOperation") if ca else []
    removed = registry.deregister_device(name, remove_cameras=remove_cameras)
    from fleet.transport import unpin_host_key

    unpinned = bool(device.get("hostname")) and unpin_host_key(
        project.known_hosts, str(device["hostname"]), int(device.get("port") or 22)
    )
    return {
        "device": name,
        "revoked_serials": revoked,
        "host_key_removed": unpinned,
        "cameras_removed": removed["cameras_removed"],
    }
