"""A/B slot state (boot.json). Minimal reader for the foundation; the OTA work extends it.

Contract used by `info`/`health` and the lab (keep these signatures):
``active_slot(layout) -> str``, ``software_version(layout) -> str``,
``factory_reset_state(layout, version) -> None``.
"""

from __future__ import annotations

from typing import Any

from fleet_runtime.layout import Layout, atomic_write_json, read_json


def read_state(layout: Layout) -> dict[str, Any]:
    state = read_json(layout.boot_json, default=None)
    if state is None:
        return {"active": "a", "pending": None, "trials_left": 0, "slots": {}}
    return dict(state)


def active_slot(layout: Layout) -> str:
    return str(read_state(layout).get("active", "a"))


def software_version(layout: Layout) -> str:
    state = read_state(layout)
    slot = state.get("slots", {}).get(state.get("active", "a")) or {}
    return str(slot.get("version", "unknown"))


def factory_reset_state(layout: Layout, version: str) -> None:
    """Factory state: slot a holds `version`, committed; slot b empty."""
    atomic_write_json(
        layout.boot_json,
        {
            "active": "a",
            "pending": None,
            "trials_left": 0,
            "slots": {"a": {"version": version, "committed": True}, "b": None},
        },
    )
