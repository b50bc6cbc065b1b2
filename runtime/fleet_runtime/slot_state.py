"""Reading the A/B slot state (``boot.json``) without the machinery that changes it.

`fleet_runtime.slots` is the state machine: installing, activating, booting, committing,
with bundles, backends and their imports. A health, info or slots call only reads where
the device stands; this module is that reading, and imports next to nothing, so that a
call a controller makes of every device every few seconds starts fast on a small core
(#19). ``slots`` re-exports every name here.

>>> from pathlib import Path
>>> active_slot(Layout(Path("/nonexistent")))
'a'
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

from fleet_runtime.layout import Layout, read_json

FORMAT = 2


class State(str, Enum):
    IDLE = "idle"
    INSTALLING = "installing"
    INSTALLED = "installed"
    ACTIVATED = "activated"
    TRIAL = "trial"


def _upgrade(doc: dict[str, Any]) -> dict[str, Any]:
    """Fill fields a factory (format 1) boot.json lacks."""
    doc.setdefault("format", FORMAT)
    doc.setdefault("state", State.IDLE.value)
    doc.setdefault("active", "a")
    doc.setdefault("committed_slot", doc["active"])
    doc.setdefault("pending", None)
    doc.setdefault("trials_left", 0)
    doc.setdefault("boots", 0)
    doc.setdefault("last_error", None)
    slots = doc.setdefault("slots", {})
    for name in ("a", "b"):
        slots.setdefault(name, None)
    return doc


def read_state(layout: Layout) -> dict[str, Any]:
    state = read_json(layout.boot_json, default=None)
    if state is None:
        return _upgrade({"active": "a", "slots": {}})
    return _upgrade(dict(state))


def other(slot: str) -> str:
    return "b" if slot == "a" else "a"


def record(doc: dict[str, Any], slot: str) -> dict[str, Any]:
    return dict(doc["slots"].get(slot) or {})


def active_slot(layout: Layout) -> str:
    return str(read_state(layout).get("active", "a"))


def software_version(layout: Layout) -> str:
    state = read_state(layout)
    slot = state.get("slots", {}).get(state.get("active", "a")) or {}
    return str(slot.get("version", "unknown"))


def committed_version(layout: Layout) -> str | None:
    doc = read_state(layout)
    return record(doc, doc["committed_slot"]).get("version")


def incoming_dir(layout: Layout) -> Path:
    """Where the controller uploads bundles before ``install``."""
    return layout.staging


def selftest_file(layout: Layout) -> Path:
    return layout.run / "selftest.json"


def read_selftest(layout: Layout) -> dict[str, Any] | None:
    result = read_json(selftest_file(layout), default=None)
    return dict(result) if result else None


def summary(layout: Layout) -> dict[str, Any]:
    """Both slots, versions, pending state, trials, last self-test (for `fleet-agent slots`)."""
    doc = read_state(layout)
    return {
        "state": doc["state"], "active": doc["active"], "committed_slot": doc["committed_slot"],
        "pending": doc["pending"], "trials_left": doc["trials_left"], "boots": doc["boots"],
        "software": software_version(layout), "slots": doc["slots"],
        "last_error": doc["last_error"], "selftest": read_selftest(layout),
        "incoming": str(incoming_dir(layout)), "device": _hardware(layout),
    }


def _hardware(layout: Layout) -> dict[str, Any]:
    """Name, hardware and arch from device.json (none of them when it is missing)."""
    device = read_json(layout.device_json, default=None) or {}
    return {k: device.get(k) for k in ("name", "hardware", "arch")}
