"""Can the device reach the cameras its configuration binds? One RTSP probe per device.

`probe_cameras` sends the bound registry cameras, credentials included, on stdin to
``fleet-agent rtsp-probe`` (the device probes from its own network, as `fleet
cameras probe --via-device` does) and returns only each camera's name and status:
no URL, no user, no password leaves this function. Nothing bound: nothing is called.

>>> probe_cameras(agent, config)                   # doctest: +SKIP
{'door': 'REACHABLE', 'yard': 'UNREACHABLE'}
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fleet.errors import AgentCallError

if TYPE_CHECKING:
    from fleet.agent import Agent
    from fleet.apps.work import DeviceConfig

PROBE_TIMEOUT_S = 5.0
REACHABLE = "REACHABLE"


def probe_request(config: DeviceConfig, timeout: float = PROBE_TIMEOUT_S) -> bytes | None:
    """The `rtsp-probe` request for the bound cameras (from the device's sealed cameras
    file, so the probe uses exactly what the app will), or None when none is bound."""
    sealed = config.sealed()
    bound = {name for names in config.cameras().values() for name in names}
    if not sealed or not bound:
        return None
    entries = [c for c in json.loads(sealed).get("cameras") or [] if c.get("name") in bound]
    if not entries:
        return None
    return json.dumps({"timeout": timeout, "cameras": entries}).encode()


def probe_cameras(agent: Agent, config: DeviceConfig,
                  timeout: float = PROBE_TIMEOUT_S) -> dict[str, str] | None:
    """Camera name -> probe status (``REACHABLE``, ``UNREACHABLE``, ``TIMEOUT``, ...);
    None when the configuration binds no registry camera (no call is made)."""
    body = probe_request(config, timeout)
    if body is None:
        return None
    try:
        answer: dict[str, Any] | None = agent.call("rtsp-probe", stdin=body,
                                                   timeout=timeout * 4 + 10)
    except AgentCallError:  # the device could not run the probe: no camera is known reachable
        answer = None
    return probe_statuses(body, answer)


def probe_statuses(body: bytes, answer: dict[str, Any] | None) -> dict[str, str]:
    """Camera name -> status from the device's `rtsp-probe` answer to the request `body`
    (``ERROR`` for each camera when there is no ok answer, or none for that camera)."""
    names = sorted(c["name"] for c in json.loads(body)["cameras"])
    ok = answer is not None and answer.get("ok", True)
    found = {str(r.get("name")): str(r.get("status")) for r in
             ((answer or {}).get("results") or [] if ok else []) if isinstance(r, dict)}
    return {name: found.get(name, "ERROR") for name in names}
