"""Device registration and deregistration: the steps around the store.

`register` records every selected inventory host (idempotent) and, when the
fleet CA has issued the device a certificate (``certs/devices/<name>.crt``),
its fingerprint (the aws backend also registers it in IoT with its policy).
`deregister` revokes the device's certificate with the fleet CA
(`fleet.pki`, when the project has one), removes the device from the store
(history stays) and unpins its SSH host key from ``.fleet/known_hosts``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleet.errors import ConfigError
from fleet.project import Project
from fleet.registry import NotFound, Store


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
    from fleet import pki  # only deregister needs the CA: not imported for the other verbs

    if not (project.certs / "ca.crt").exists():
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


def _info_task(task: Any) -> Any:
    from nornir.core.task import Result

    from fleet.agent import agent_for

    return Result(host=task.host, result=agent_for(task).info().answer)


def refresh(registry: Store, nr: Any) -> list[dict[str, Any]]:
    """Ask each registered device's agent who it is and what it runs (`fleet-agent info`):
    answering devices become PROVISIONED and ONLINE with their current software; devices
    that cannot be reached become OFFLINE; unprovisioned ones AWAITING_PROVISIONING."""
    from fleet.agent import outdated_agent
    from fleet.errors import AgentCallError, FleetError

    known = {d["name"] for d in registry.list_devices()}
    chosen = nr.filter(filter_func=lambda h: h.name in known)
    results = chosen.run(task=_info_task, on_failed=True)
    chosen.close_connections(on_failed=True)
    rows = []
    for name, multi in sorted(results.items()):
        first, reason, warning = multi[0], "", None
        if not first.failed:
            warning = outdated_agent(first.result)
            registry.set_device_status(name, "PROVISIONED")
            registry.set_device_status(name, "ONLINE")
            registry.set_current_software(name, first.result.get("software"))
        elif isinstance(first.exception, AgentCallError) and first.exception.code == (
            "not-provisioned"
        ):
            registry.set_device_status(name, "AWAITING_PROVISIONING")
            registry.set_device_status(name, "ONLINE")
            reason = "no device identity yet"
        else:
            registry.set_device_status(name, "OFFLINE")
            exc = first.exception
            reason = exc.line() if isinstance(exc, FleetError) else f"{type(exc).__name__}: {exc}"
        device = registry.get_device(name) or {}
        rows.append(
            {
                "name": name,
                "site": device.get("site"),
                "status": device.get("status"),
                "software": device.get("software_current"),
                "reason": reason,
                "warning": warning,
            }
        )
    return rows
