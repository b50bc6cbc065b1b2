"""`commit --expect-version V --boots-above N`: the controller's post-reboot check, made on
the device in the same call as the commit.

An OTA push used to ask `health --slots` after the reboot, judge the answer on the
controller, then call `commit`: two agent starts and two round trips for one
decision. With these flags the controller sends what it expects instead, and the
device checks it before anything is committed, exactly as the controller did: the
device booted after the install (its boot counter went past N), the booted slot and
the running system report version V, the slot's self-test did not fail, and the
health verdict (with the thresholds given) is not ``failing`` (nor ``degraded`` with
``--require-healthy``). Any of these wrong refuses the call with ``not-verified``,
every problem named, and nothing changes: the controller rolls back as before. Only
then do the gate and the commit run. The facts the check read come back under
``verified``.
"""

from __future__ import annotations

import argparse
from typing import Any

from fleet_runtime import slots
from fleet_runtime.agent.protocol import AgentError
from fleet_runtime.layout import Layout


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--expect-version", metavar="VERSION",
                   help="commit only if the device booted and runs VERSION, its self-test "
                   "passed and its health is not failing (the controller's post-reboot check)")
    p.add_argument("--boots-above", type=int, default=-1, metavar="N",
                   help="with --expect-version: the boot counter must be above N (it rebooted)")
    p.add_argument("--require-healthy", action="store_true",
                   help="with --expect-version: a degraded verdict refuses too")


def check(args: argparse.Namespace, layout: Layout, thresholds: list[str]) -> dict[str, Any]:
    """The facts after the boot when they meet the expectations; AgentError otherwise."""
    # The gate that follows imports the daemon's health summary anyway.
    from fleet_runtime.agent.daemon import health_summary

    state = slots.summary(layout)
    health = health_summary(layout, thresholds)
    target, selftest = args.expect_version, state.get("selftest") or {}
    problems = []
    if int(state["boots"]) <= args.boots_above:
        problems.append("the device answered but did not boot")
    if state["software"] != target or health["software"] != target:
        problems.append(f"reports version {health['software']}, expected {target}"
                        + (" (the device fell back)" if state["state"] == "idle" else ""))
    if selftest.get("slot") == state["active"] and selftest.get("ok") is False:
        problems.append(f"self-test failed: {selftest.get('reason')}")
    bad = {"failing"} | ({"degraded"} if args.require_healthy else set())
    if health["verdict"] in bad:
        problems.append(f"health {health['verdict']}: {health['reason']}")
    if problems:
        raise AgentError("not-verified", "; ".join(problems))
    return {"software": state["software"], "verdict": health["verdict"],
            "selftest": selftest.get("ok") if selftest else None, "boots": state["boots"]}
