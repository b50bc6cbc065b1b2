"""`fleet-agent info`: who this device is and what it runs."""

from __future__ import annotations

import argparse
import time
from typing import Any

from fleet_runtime import __version__, labhooks, slot_state
from fleet_runtime.agent.protocol import AgentError
from fleet_runtime.layout import Layout, read_json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("info", help="identity, software version, active slot, uptime")
    p.set_defaults(handler=run)


def uptime_seconds(layout: Layout) -> float:
    """Seconds since the device last booted (a lab device: since the lab booted it)."""
    booted = labhooks.booted_at(layout)
    if booted is not None:
        return max(0.0, time.time() - booted)
    with open("/proc/uptime") as fh:
        return float(fh.read().split()[0])


def identity(layout: Layout) -> dict[str, Any]:
    device = read_json(layout.device_json, default=None)
    if device is None:
        raise AgentError("not-provisioned", f"no device identity at {layout.device_json}")
    return dict(device)


def run(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    device = identity(layout)
    return {
        "name": device.get("name"),
        "serial": device.get("serial"),
        "site": device.get("site"),
        "hardware": device.get("hardware"),
        "arch": device.get("arch"),
        "software": slot_state.software_version(layout),
        "slot": slot_state.active_slot(layout),
        "uptime_s": round(uptime_seconds(layout), 1),
        "agent_version": __version__,
        "time": time.time(),
        "paths": {"root": str(layout.root), "staging": str(layout.staging)},
    }
