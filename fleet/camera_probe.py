"""Probe registered cameras with RTSP DESCRIBE: from the controller, or from each camera's
device over SSH (`fleet-agent rtsp-probe`, the request on stdin). The RTSP client itself is
``fleet_runtime.rtsp``, shared by both halves.

>>> outcomes = probe_from_controller(registry, registry.list_cameras())   # doctest: +SKIP
>>> outcomes[0]["status"], outcomes[0]["codec"]
('REACHABLE', 'H264')

Passwords are read from the store only into the request and never printed or logged:
task arguments that carry them print as ``<redacted>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleet.registry import Store

PROBE_WORKERS = 16


def _probe_request(registry: Store, cams: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the RTSP client needs per camera, password included (kept in memory only)."""
    return [
        {
            "name": c["name"],
            "url": c["rtsp_url"],
            "username": c["username"],
            "password": registry.camera_password(c["name"]) if c["password"] else "",
        }
        for c in cams
    ]


def _outcome(cam: dict[str, Any], found: Mapping[str, Any], via: str) -> dict[str, Any]:
    return {
        "name": cam["name"],
        "device": cam["device"],
        "site": cam["site"],
        "via": via,
        "url": cam["rtsp_url"],
        "status": found["status"],
        "codec": found.get("codec"),
        "detail": found.get("detail", ""),
        "elapsed_ms": found.get("elapsed_ms"),
    }


def probe_from_controller(
    registry: Store, cams: list[dict[str, Any]], timeout: float = 5.0
) -> list[dict[str, Any]]:
    """DESCRIBE every camera from this machine, in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    from fleet_runtime.rtsp import probe

    requests = _probe_request(registry, cams)
    with ThreadPoolExecutor(max_workers=max(1, min(PROBE_WORKERS, len(cams)))) as pool:
        found = list(
            pool.map(
                lambda r: probe(r["url"], r["username"], r["password"], timeout=timeout).as_dict(),
                requests,
            )
        )
    return [_outcome(c, f, "controller") for c, f in zip(cams, found, strict=True)]


def probe_from_devices(
    nr: Any, registry: Store, cams: list[dict[str, Any]], timeout: float = 5.0
) -> list[dict[str, Any]]:
    """Ask each camera's device to DESCRIBE it (`fleet-agent rtsp-probe`, request on stdin).
    `nr` is a Nornir object holding those devices; an unreachable device fails its cameras."""
    import json as jsonlib

    by_device: dict[str, list[dict[str, Any]]] = {}
    for cam in cams:
        by_device.setdefault(cam["device"], []).append(cam)
    bodies = Redacted(
        {
            dev: jsonlib.dumps(
                {"timeout": timeout, "cameras": _probe_request(registry, group)}
            ).encode()
            for dev, group in by_device.items()
        }
    )
    chosen = nr.filter(filter_func=lambda h: h.name in by_device)
    results = chosen.run(task=_rtsp_probe_task, bodies=bodies, timeout=timeout, on_failed=True)
    chosen.close_connections(on_failed=True)
    out = []
    for dev, group in by_device.items():
        out.extend(_device_outcomes(dev, group, results.get(dev)))
    return out


class Redacted:
    """Holds request bodies with passwords; prints as ``<redacted>`` (Nornir logs task args)."""

    def __init__(self, bodies: dict[str, bytes]) -> None:
        self._bodies = bodies

    def __getitem__(self, device: str) -> bytes:
        return self._bodies[device]

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__


def _rtsp_probe_task(task: Any, bodies: Redacted, timeout: float) -> Any:
    from nornir.core.task import Result

    from fleet.agent import agent_for

    answer = agent_for(task).call(
        "rtsp-probe", stdin=bodies[task.host.name], timeout=timeout * 4 + 10
    )
    return Result(host=task.host, result=answer["results"])


def _device_outcomes(device: str, group: list[dict[str, Any]], multi: Any) -> list[dict[str, Any]]:
    if multi is None:
        why = {"status": "ERROR", "detail": f"device '{device}' is not in the inventory"}
        return [_outcome(c, why, device) for c in group]
    if multi[0].failed:
        from fleet.health import failure_reason

        why = {
            "status": "ERROR",
            "detail": f"probe via {device} failed: {failure_reason(multi[0].exception)}",
        }
        return [_outcome(c, why, device) for c in group]
    found = {r["name"]: r for r in multi[0].result}
    return [
        _outcome(c, found.get(c["name"], {"status": "ERROR", "detail": "no answer"}), device)
        for c in group
    ]


def record_probes(registry: Store, outcomes: list[dict[str, Any]]) -> None:
    """Store each camera's probe status and codec."""
    for o in outcomes:
        registry.set_camera_probe(o["name"], o["status"], o["codec"], o["detail"])
