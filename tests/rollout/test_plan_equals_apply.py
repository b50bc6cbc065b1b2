"""`fleet ota plan` and the rollout decide the same, device by device.

Each row is one device's recorded `fleet-agent slots` answer (taken from a lab
device, then changed in the one field the row is about) and a bundle. The same
answers feed both halves through a session that replays them: the plan's task
(`OtaWork.decide`) and a real rollout (`engine.start` running `install_bundle`
under the rollout runner). They must agree on every row: a device the plan
refuses fails the rollout's check with the same reason and nothing is sent to
it; one the plan calls current is unchanged; one it would update is installed
(the recording answers the install with an error, which is how the test sees
that the rollout went past its check).

The last test checks the same on a real lab device over SSH, through the CLI.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fixtures_bundle import make_bundle, make_device, new_key
from lab_rollouts import build, lab_project
from labkit import run_cli
from nornir.core import Nornir
from nornir.core.inventory import Defaults, Groups, Host, Hosts, Inventory
from nornir.plugins.runners import SerialRunner

from fleet.agent import local_agent
from fleet.decisions import Change, NoChange, Refusal, decide_update
from fleet.facts import Slots
from fleet.ota import read_target
from fleet.project import Project
from fleet.rollout import engine
from fleet.rollout.policy import Policy
from fleet.rollout.update import OtaWork
from fleet.transport import CONNECTION_NAME, ExecResult

KEY = new_key()
# `fleet-agent slots` of a lab device on its factory image (recorded; the path shortened).
RECORDED_SLOTS: dict[str, Any] = {
    "active": "a", "boots": 0, "committed_slot": "a",
    "device": {"arch": "aarch64", "hardware": "jetson-xavier-nx", "name": "berlin-01"},
    "incoming": "/var/lib/fleet/staging", "last_error": None, "ok": True, "pending": None,
    "protocol": 1, "selftest": None,
    "slots": {"a": {"committed": True, "status": "committed", "version": "1.0.0"}, "b": None},
    "software": "1.0.0", "state": "idle", "trials_left": 0,
}
OTHER_DIGEST = "0" * 64


def recorded(edit: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    answer = copy.deepcopy(RECORDED_SLOTS)
    if edit is not None:
        edit(answer)
    return answer


def running(version: str) -> Callable[[dict[str, Any]], None]:
    def edit(answer: dict[str, Any]) -> None:
        answer["software"] = answer["slots"]["a"]["version"] = version
    return edit


def on_trial(answer: dict[str, Any]) -> None:
    """Slot b booted on trial with another bundle, not yet committed."""
    answer.update(state="trial", active="b", pending="b", boots=1, trials_left=2,
                  software="1.0.5")
    answer["slots"]["b"] = {"status": "trial", "version": "1.0.5",
                            "manifest_sha256": OTHER_DIGEST}


def device(**fields: str) -> Callable[[dict[str, Any]], None]:
    return lambda answer: answer["device"].update(fields)


PERMIT = {"downgrade_permit": {"version": "1.2.0-rc9", "reason": "rc10 broke the camera"}}
RC9 = {"version": "1.2.0-rc9", "min_version": None}
# id: (slots answer, bundle fields, plan state, refusal code or None)
ROWS: dict[str, tuple[dict[str, Any], dict[str, Any], str, str | None]] = {
    "update": (recorded(), {}, "change", None),
    "trial-pending": (recorded(on_trial), {}, "refused", "trial-pending"),
    "other-hardware": (recorded(device(hardware="jetson-tx2")), {}, "refused", "wrong-hardware"),
    "arch-mismatch": (recorded(device(arch="x86_64")), {}, "refused", "wrong-arch"),
    "below-min-version": (recorded(running("0.9.0")), {}, "refused", "min-version"),
    "already-at-target": (recorded(running("1.1.0")), {}, "current", None),
    "downgrade-rc10-to-rc9": (recorded(running("1.2.0-rc10")), RC9, "refused", "downgrade"),
    "downgrade-with-permit": (recorded(running("1.2.0-rc10")), {**RC9, **PERMIT}, "change",
                              None),
}
OUTCOME = {"change": "failed", "current": "unchanged", "refused": "failed"}


class Replay:
    """A device session that answers agent commands from a recording and logs each one.
    `slots` (and `slots --verify`) come from the row; an install is answered with an error:
    the recording has no device to write to."""

    def __init__(self, slots: dict[str, Any]) -> None:
        self.slots, self.calls = slots, []
        self.transport = self  # `probe` asks whether the transport is active
        self.sftp = self  # a resumed upload asks for a partial file: there is none

    def is_active(self) -> bool:
        return True

    def stat(self, path: str) -> Any:
        raise FileNotFoundError(path)

    def exec(self, argv: list[str], **_: Any) -> ExecResult:
        self.calls.append(argv[1])
        if argv[1] == "slots":
            answer = {**self.slots, **({"verify": {"a": [], "b": []}} if "--verify" in argv
                                       else {})}
        else:
            answer = {"ok": False, "protocol": 1, "error": {
                "code": "recorded", "message": f"{argv[1]}: not in the recording"}}
        return ExecResult(0, json.dumps(answer).encode() + b"\n", b"")


class Connection:
    def __init__(self, session: Replay) -> None:
        self.connection = session

    def close(self) -> None:
        pass


def replayed_fleet() -> tuple[Nornir, dict[str, Replay]]:
    """One host per row, each connected to a replay of its row's answers."""
    sessions = {name: Replay(row[0]) for name, row in ROWS.items()}
    hosts = Hosts({name: Host(name, data={"site": "lab"}) for name in ROWS})
    for name, host in hosts.items():
        host.connections[CONNECTION_NAME] = Connection(sessions[name])  # type: ignore[assignment]
    nr = Nornir(inventory=Inventory(hosts=hosts, groups=Groups(), defaults=Defaults()))
    return nr, sessions


def bundles(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name, (_, fields, _, _) in ROWS.items():
        path = tmp_path / f"{name}.bundle"
        path.write_bytes(make_bundle(KEY, **fields))
        out[name] = path
    return out


@pytest.mark.parametrize("name", list(ROWS))
def test_the_decision_from_recorded_facts(tmp_path: Path, name: str) -> None:
    answer, _, state, code = ROWS[name]
    decision = decide_update(Slots.from_answer(answer), read_target(bundles(tmp_path)[name]))
    kind = {"change": Change, "current": NoChange, "refused": Refusal}[state]
    assert isinstance(decision, kind), decision
    if code is not None:
        assert isinstance(decision, Refusal) and decision.code == code


@pytest.mark.parametrize("name", list(ROWS))
def test_plan_and_rollout_agree_on_recorded_facts(tmp_path: Path, name: str) -> None:
    (tmp_path / "out").mkdir()
    project = Project.locate(tmp_path)
    bundle = bundles(tmp_path)[name]
    nr, sessions = replayed_fleet()
    nr = nr.filter(name=name)
    work = OtaWork.for_bundle(project, bundle)
    plan = nr.with_runner(SerialRunner()).run(task=work.decide)[name][0].result
    assert plan["state"] == ROWS[name][2], plan
    assert set(sessions[name].calls) == {"slots"}  # the plan only reads
    sessions[name].calls.clear()

    report = engine.start(project, nr, work, Policy(), selection={})
    outcome = report.devices[name]
    assert outcome.outcome == OUTCOME[plan["state"]], outcome
    installed = "install" in sessions[name].calls
    assert installed == (plan["state"] == "change"), sessions[name].calls
    if plan["state"] == "refused":
        assert outcome.reason == plan["reason"]
    if plan["state"] == "change":
        assert "not in the recording" in outcome.reason


def test_plan_json_and_the_rollout_agree_on_a_refused_lab_device(tmp_path: Path) -> None:
    """A real lab device of hardware the bundle is not for: the plan says refused with the
    reason the rollout then fails it with; its neighbour is planned and updated."""
    lab = lab_project(tmp_path, 1, 2)
    try:
        bundle = build(lab)
        odd = lab.layout("berlin-02").device_json
        identity = json.loads(odd.read_text())
        odd.write_text(json.dumps({**identity, "hardware": "jetson-tx2"}))
        res = run_cli(lab.project.root, "ota", "plan", str(bundle), "-i", "lab", "--json")
        assert res.exit_code == 0, res.stderr
        planned = {d["name"]: d for d in json.loads(res.stdout)["devices"]}
        assert planned["berlin-01"]["state"] == "change"
        assert planned["berlin-02"]["state"] == "refused"
        assert "wrong-hardware" in planned["berlin-02"]["reason"]
        shown = run_cli(lab.project.root, "ota", "plan", str(bundle), "-i", "lab").stdout
        assert "1 to update, 0 already at 1.1.0, 0 offline, 1 refused" in shown
        assert f"berlin-02: {planned['berlin-02']['reason']}" in shown
        res = run_cli(lab.project.root, "ota", "rollout", str(bundle), "-i", "lab", "--json")
        assert res.exit_code == 1, res.stderr
        report = json.loads(res.stdout.splitlines()[-1])["report"]
        devices = {d["name"]: d for d in report["devices"]}
        assert devices["berlin-01"]["outcome"] == "succeeded"
        assert devices["berlin-02"]["outcome"] == "failed"
        assert devices["berlin-02"]["reason"] == planned["berlin-02"]["reason"]
    finally:
        lab.down()


def test_the_device_itself_refuses_rc9_over_rc10_and_takes_rc11(tmp_path: Path) -> None:
    """The device's own guard (a real `fleet-agent install` on a device root), not only the
    controller's decision: without a permit, rc9 is a downgrade from rc10; rc11 is not."""
    root = make_device(tmp_path / "berlin-01", KEY, version="1.2.0-rc10").root
    for version in ("1.2.0-rc9", "1.2.0-rc11"):
        (tmp_path / f"{version}.bundle").write_bytes(
            make_bundle(KEY, version=version, min_version=None))
    agent = local_agent(root)
    refused = agent.answer("install", str(tmp_path / "1.2.0-rc9.bundle"))
    assert not refused["ok"] and refused["error"]["code"] == "downgrade"
    after = agent.slots()
    assert after.state == "idle" and "b" not in after.slots  # nothing was written
    taken = agent.answer("install", str(tmp_path / "1.2.0-rc11.bundle"))
    assert taken["ok"] and taken["version"] == "1.2.0-rc11"

