"""The update flow's gate before a commit: the booted slot's self-test, then the agent's
own health verdict, the one the controller's rollout gate reads (``failing`` fails it).

>>> check(layout, ["--disk-fail", "90"])["ok"]  # doctest: +SKIP
True
"""

from __future__ import annotations

import time
from typing import Any

from fleet_runtime import slots
from fleet_runtime.layout import Layout


def check(layout: Layout, flags: list[str] | None) -> dict[str, Any]:
    """The gate: the booted slot's self-test, then the agent's health verdict (``failing``
    fails it, the verdict the controller's rollout gate refuses)."""
    active = slots.read_state(layout)["active"]
    selftest = slots.read_selftest(layout) or {}
    gate: dict[str, Any] = {"at": time.time(), "slot": active, "selftest": selftest.get("ok")}
    if selftest.get("slot") == active and not selftest.get("ok", True):
        return {**gate, "ok": False, "code": "selftest-failed",
                "reason": f"slot {active} failed its self-test ({selftest.get('reason')})"}
    # Imported here: every slot command imports the flow and so this module, and the
    # daemon (MQTT, logs, health probes) is most of an agent's start-up; only a commit needs it.
    from fleet_runtime.agent.daemon import health_flags, health_summary

    health = health_summary(layout, health_flags(layout, None) if flags is None else flags)
    gate["verdict"] = health["verdict"]
    if health["verdict"] == "failing":
        return {**gate, "ok": False, "code": "unhealthy",
                "reason": f"health failing after the reboot: {health.get('reason')}"}
    return {**gate, "ok": True}
