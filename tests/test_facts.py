"""Device facts: the agent's answers, typed once by fleet/agent.py.

The local session runs the real `fleet-agent` on a device root on this machine
(FLEET_ROOT set), so these are the answers a device gives, read through the
same `Agent` the SSH path uses.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_bundle import ARCH, HARDWARE, make_device, new_key

from fleet.agent import local_agent
from fleet.errors import AgentCallError
from fleet.facts import Apps, Check, Health, Slots


@pytest.fixture
def device(tmp_path: Path) -> Path:
    return make_device(tmp_path / "berlin-01", new_key(), version="1.0.0").root


def test_info_from_a_real_agent(device: Path) -> None:
    info = local_agent(device).info()
    assert (info.name, info.hardware, info.arch, info.software) == (
        "berlin-01", HARDWARE, ARCH, "1.0.0")
    assert info.answer["name"] == "berlin-01"  # the answer as sent, for pass-through reports


def test_slots_from_a_real_agent(device: Path) -> None:
    slots = local_agent(device).slots(verify=True)
    assert (slots.state, slots.active, slots.committed_slot) == ("idle", "a", "a")
    assert slots.committed_version == "1.0.0" and slots.software == "1.0.0"
    assert (slots.hardware, slots.arch) == (HARDWARE, ARCH)
    assert slots.verify is not None and slots.verify["a"] == ()
    assert slots.holding("0" * 64) is None  # idle: no slot is mid-update


def test_health_and_apps_from_a_real_agent(device: Path) -> None:
    health = local_agent(device).health()
    assert health.software == "1.0.0" and health.verdict in ("healthy", "degraded", "failing")
    assert {c.name for c in health.checks} >= {"disk", "memory", "slot"}
    assert health.apps == Apps({})  # no runtime on this device


def test_a_refusal_from_the_agent_raises_with_its_code(tmp_path: Path) -> None:
    with pytest.raises(AgentCallError) as info:
        local_agent(tmp_path / "nobody").info()  # no identity: not provisioned
    assert info.value.code == "not-provisioned"


def test_a_slot_left_holding_a_bundle_is_found_by_its_digest() -> None:
    answer = {"state": "installed", "active": "a", "committed_slot": "a", "software": "1.0.0",
              "slots": {"a": {"version": "1.0.0", "status": "committed"},
                        "b": {"version": "1.1.0", "status": "installed",
                              "manifest_sha256": "ab" * 32}}}
    slots = Slots.from_answer(answer)
    assert slots.holding("ab" * 32) == "b" and slots.holding("cd" * 32) is None


def test_apps_come_from_the_app_checks() -> None:
    health = Health.from_answer({"verdict": "degraded", "software": "1.1.0", "checks": [
        {"name": "app:counter", "status": "warn", "reason": "app counter: 3.0 fps"},
        {"name": "cameras:counter", "status": "ok", "reason": ""},
        {"name": "disk", "status": "ok", "reason": ""}]})
    assert health.apps.names() == ["counter"]
    assert health.apps.apps["counter"].status == "warn"
    assert Check("disk", "ok") in health.checks
