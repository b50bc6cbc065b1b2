"""The device-side update flow's table and gate, through the real `fleet-agent` commands.

The fault table (SIGKILL in every state, push and pull) is test_flow_faults.py;
the pull gate on the mosquitto lab is test_jobs.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from fleet_runtime import flow, slots
from fleet_runtime.agent import cli
from fleet_runtime.agent.protocol import AgentError
from fleet_runtime.layout import Layout, atomic_write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures_bundle import make_bundle, make_device, new_key  # noqa: E402
from fixtures_jobs import failing_app, unhealthy_bundle  # noqa: E402,F401  (fixture by name)

KEY = new_key()
PARSER = cli.build_parser()
ENDS = {flow.State.DONE, flow.State.FAILED}


def agent(layout: Layout, *argv: str) -> dict[str, Any]:
    args = PARSER.parse_args(list(argv))
    try:
        return dict(args.handler(args, layout))
    except AgentError as exc:
        return {"error": exc.code, "message": exc.message}


def test_every_state_can_reach_an_end() -> None:
    """No state is a trap: from each, the table leads to done or failed."""
    for start in flow.State:
        seen, todo = {start}, [start]
        while todo:
            state = todo.pop()
            for (s, _e), nxt in flow.TABLE.items():
                if s is state and nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert seen & ENDS, start


def test_every_action_state_has_a_handler_and_every_slot_state_is_adopted() -> None:
    waits = {flow.State.IDLE, flow.State.DONE, flow.State.FAILED}
    assert set(flow.HANDLERS) == set(flow.State) - waits
    assert set(flow.ADOPT) == {s.value for s in slots.State}
    assert set(flow.SLOT_STATES) == set(flow.State)


@pytest.fixture
def device(tmp_path: Path) -> Layout:
    return make_device(tmp_path / "dev", KEY)


def test_push_commit_is_refused_by_the_health_gate_and_rolls_back(device, tmp_path, failing_app):
    """Push passes the same gate as pull: a release whose app fails once booted is not
    committed by `fleet-agent commit`; the device rolls itself back."""
    bundle = tmp_path / "sick.bundle"
    bundle.write_bytes(unhealthy_bundle(KEY, failing_app))
    agent(device, "install", str(bundle), "--activate")
    assert agent(device, "boot")["selftest"]["ok"] is True  # it boots, and its self-test passes
    answer = agent(device, "commit")
    assert answer["error"] == "unhealthy" and "detector model failed to load" in answer["message"]
    assert agent(device, "boot")["flow"] == "failed"
    assert slots.software_version(device) == "1.0.0"
    assert slots.read_state(device)["slots"]["b"]["committed"] is False


def test_commit_force_skips_the_gate(device, tmp_path, failing_app):
    bundle = tmp_path / "sick.bundle"
    bundle.write_bytes(unhealthy_bundle(KEY, failing_app))
    agent(device, "install", str(bundle), "--activate")
    agent(device, "boot")
    answer = agent(device, "commit", "--force")
    assert answer["changed"] is True and answer["gate"]["forced"] is True
    assert answer["flow"] == "done" and slots.committed_version(device) == "1.1.0"


def test_commit_answers_the_gate_and_slots_reports_the_flow(device, tmp_path):
    bundle = tmp_path / "good.bundle"
    bundle.write_bytes(make_bundle(KEY))
    installed = agent(device, "install", str(bundle), "--activate")
    assert (installed["state"], installed["flow"]) == ("installed", "activated")  # fields added
    agent(device, "boot")
    assert agent(device, "slots")["flow"]["state"] == "checking"
    answer = agent(device, "commit")
    assert (answer["changed"], answer["version"], answer["flow"]) == (True, "1.1.0", "done")
    assert answer["gate"]["ok"] is True and answer["gate"]["verdict"] != "failing"
    assert agent(device, "slots")["flow"]["outcome"]["code"] == "ok"


def test_slots_moved_by_hand_are_adopted(device, tmp_path):
    """A slot verb run without the flow (an operator, a factory tool): the flow follows."""
    with (tmp_path / "b").open("wb") as fh:
        fh.write(make_bundle(KEY))
    with (tmp_path / "b").open("rb") as fh:
        slots.install(device, fh)
    slots.activate(device)
    slots.boot(device)
    answer = agent(device, "commit")
    assert answer["flow"] == "done" and slots.committed_version(device) == "1.1.0"


def test_an_update_on_trial_refuses_another_install(device, tmp_path):
    bundle = tmp_path / "good.bundle"
    bundle.write_bytes(make_bundle(KEY))
    agent(device, "install", str(bundle), "--activate")
    agent(device, "boot")
    answer = agent(device, "install", str(bundle))
    assert answer["error"] == "wrong-state" and "commit or rollback first" in answer["message"]


def on_trial(device: Layout, tmp_path: Path) -> None:
    bundle = tmp_path / "good.bundle"
    bundle.write_bytes(make_bundle(KEY))
    agent(device, "install", str(bundle), "--activate")
    agent(device, "boot")


def test_the_gate_judges_health_by_the_thresholds_commit_is_given(device, tmp_path):
    """The controller's thresholds (`commit --disk-fail ...`, as it passes them to `health`)
    decide the gate: any used disk is over 0.1 %."""
    on_trial(device, tmp_path)
    answer = agent(device, "commit", "--disk-fail", "0.1")
    assert answer["error"] == "unhealthy" and "disk" in answer["message"]
    assert slots.committed_version(device) == "1.0.0"


def test_without_thresholds_the_gate_uses_the_fleets_from_the_settings(device, tmp_path):
    """What the controller wrote for heartbeats (`health_args` in mqtt.json): the pull gate's
    thresholds, and push's when commit is given none."""
    atomic_write_json(device.etc / "mqtt.json", {"health_args": ["--disk-fail", "0.1"]})
    on_trial(device, tmp_path)
    assert agent(device, "commit")["error"] == "unhealthy"
    agent(device, "boot")  # the controller reboots it into the committed slot
    on_trial(device, tmp_path)
    assert agent(device, "commit", "--disk-fail", "100")["flow"] == "done"


@pytest.mark.parametrize(("expect", "problem"), [
    (["--expect-version", "1.2.0"], "reports version 1.1.0, expected 1.2.0"),
    (["--expect-version", "1.1.0", "--boots-above", "99"], "did not boot"),
    (["--expect-version", "1.1.0", "--disk-fail", "0.1"], "health failing"),
    (["--expect-version", "1.1.0", "--require-healthy", "--disk-warn", "0.1"], "health degraded"),
])
def test_commit_with_expectations_refuses_and_changes_nothing(device, tmp_path, expect, problem):
    """The controller's post-reboot check folded into the commit (one agent call): any
    expectation not met refuses before the gate runs, and the slot stays on trial."""
    on_trial(device, tmp_path)
    before = slots.read_state(device)
    answer = agent(device, "commit", *expect)
    assert answer["error"] == "not-verified" and problem in answer["message"]
    assert slots.read_state(device) == before and agent(device, "slots")["flow"]["state"] == "checking"


def test_commit_with_expectations_met_commits_and_says_what_it_saw(device, tmp_path):
    on_trial(device, tmp_path)
    boots = slots.read_state(device)["boots"]
    answer = agent(device, "commit", "--expect-version", "1.1.0", "--boots-above", str(boots - 1))
    assert (answer["version"], answer["flow"]) == ("1.1.0", "done")
    assert answer["verified"] == {"software": "1.1.0", "verdict": answer["gate"]["verdict"],
                                  "selftest": True, "boots": boots}
    assert slots.committed_version(device) == "1.1.0"


def test_slots_reset_under_an_update_on_trial_do_not_block_the_next_install(device, tmp_path):
    """The slots went back to the factory image while the flow waited for a commit (a lab
    reset, a hand-made fallback): the next install records the fallback and proceeds."""
    on_trial(device, tmp_path)
    slots.factory_reset_state(device, "1.0.0")
    answer = agent(device, "install", str(tmp_path / "good.bundle"), "--activate")
    assert answer["flow"] == "activated" and answer["activated"]["version"] == "1.1.0"
