"""The controller dies (SIGKILL) mid-batch and `fleet ota resume` finishes the job; an operator
aborts a running rollout from another shell. The rollout runs as a real `fleet` process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from lab_rollouts import build, lab_project, versions
from labkit import run_cli

from fleet.rollout.journal import Journal


@pytest.fixture
def lab(tmp_path):
    lab = lab_project(tmp_path, 1, 3, via_cli=True)
    yield lab
    lab.down()


def start_fleet(project: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "fleet.cli.main", "--project", str(project),
                             *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "COLUMNS": "120"})


def wait_for_event(project: Path, proc: subprocess.Popen[bytes], predicate,
                   timeout: float = 90.0) -> dict:
    """Poll the journal the other process writes (bounded) until an event matches."""
    folder = project / ".fleet/rollouts"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in folder.glob("*.jsonl") if folder.is_dir() else []:
            for line in path.read_text().splitlines():
                event = json.loads(line)
                if predicate(event):
                    return event
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.05)
    raise AssertionError("the journal never showed the expected event")


def test_kill_9_during_a_batch_then_resume_installs_each_device_exactly_once(lab):
    bundle = build(lab)
    root = lab.project.root
    proc = start_fleet(root, "ota", "rollout", str(bundle), "-i", "lab", "--batches", "1,100%",
                       "--concurrency", "1")
    # berlin-02 has installed and rebooted into the new slot; the controller dies as the
    # device verifies and commits in one call (before or after the device wrote the commit:
    # resume must cope with both).
    wait_for_event(root, proc, lambda e: e.get("event") == "device_step"
                   and e.get("device") == "berlin-02" and e.get("step") == "ota.verify")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)

    journal = Journal.open(lab.project)
    before = journal.report()
    assert before.status == "interrupted"
    assert before.devices["berlin-01"].outcome == "succeeded"
    assert before.devices["berlin-02"].outcome == "in_flight"
    assert before.devices["berlin-03"].outcome == "pending"
    res = run_cli(root, "ota", "status", "--json")
    assert json.loads(res.stdout)["status"] == "interrupted"

    res = run_cli(root, "ota", "resume", journal.id)
    assert res.exit_code == 0, res.stdout + res.stderr
    after = journal.report()
    assert after.status == "completed" and after.counts() == {"succeeded": 3}
    # The commit landed before the kill (resume only checks), or it did not (resume verifies
    # and commits the slot on trial): never a second install or reboot.
    assert after.devices["berlin-02"].reason.startswith("verified after resume") or \
        steps_after_resume(journal, "berlin-02") == ["ota.check", "ota.verify", "ota.commit"]
    installs = Counter(e["device"] for e in journal.events() if e["event"] == "device_installing")
    assert installs == {"berlin-01": 1, "berlin-02": 1, "berlin-03": 1}
    assert set(versions(lab).values()) == {"1.1.0"}
    for name in ("berlin-01", "berlin-02", "berlin-03"):  # on the device, not the journal
        assert_committed_once(lab, name)
    res = run_cli(root, "ota", "resume", journal.id)
    assert res.exit_code == 2 and "nothing to resume" in res.stderr


def test_abort_from_another_shell_stops_scheduling(lab):
    bundle = build(lab)
    root = lab.project.root
    proc = start_fleet(root, "ota", "rollout", str(bundle), "-i", "lab", "--batches", "100%",
                       "--concurrency", "1")
    event = wait_for_event(root, proc, lambda e: e.get("event") == "device_started"
                           and e.get("device") == "berlin-01")
    rollout_id = Journal.open(lab.project).id
    res = run_cli(root, "ota", "abort", rollout_id, "--reason", "camera vendor recall")
    assert res.exit_code == 0 and "abort requested" in res.stderr
    assert proc.wait(90) == 1
    report = Journal.open(lab.project, rollout_id).report()
    assert report.status == "aborted" and report.reason == "camera vendor recall"
    assert report.devices["berlin-01"].outcome == "succeeded"  # in flight: allowed to finish
    assert report.with_outcome("not-run") == ["berlin-02", "berlin-03"]
    assert event["batch"] == 1

    res = run_cli(root, "ota", "retry", rollout_id, "--failed", "--json")
    assert res.exit_code == 0, res.stderr
    final = json.loads(res.stdout.splitlines()[-1])["report"]
    assert final["counts"] == {"succeeded": 3} and final["status"] == "completed"


# ---- resume and retry continue from the device's own state ---------------------------------


@pytest.fixture
def lab1(tmp_path):
    lab = lab_project(tmp_path, 1, 1, via_cli=True)
    yield lab
    lab.down()


def device_installs(lab, name: str) -> int:
    """`install ok` lines in the device's own agent.log (not the controller's journal)."""
    log = lab.layout(name).logs / "agent.log"
    return log.read_text().count(" install ok ") if log.exists() else 0


def boot_state(lab, name: str) -> dict:
    return json.loads(lab.layout(name).boot_json.read_text())


def on_device(lab, name: str, *args: str) -> None:
    """What the device did by itself after the controller died (its agent kept going)."""
    agent = str(Path(sys.executable).parent / "fleet-agent")
    subprocess.run([agent, *args], check=True, capture_output=True,
                   env={**os.environ, "FLEET_ROOT": str(lab.root(name))})


def interrupted_in_check(lab, bundle: Path, name: str = "berlin-01") -> Journal:
    """A rollout whose controller was SIGKILLed while checking `name`: in flight in the
    journal, untouched on the device (a slow device keeps the check open meanwhile)."""
    root = lab.project.root
    lab.fault(name, "slow", seconds=5)
    proc = start_fleet(root, "ota", "rollout", str(bundle), "-i", "lab", "--concurrency", "1")
    wait_for_event(root, proc, lambda e: e.get("event") == "device_step"
                   and e.get("device") == name and e.get("step") == "ota.check")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    lab.fault(name, "clear")
    journal = Journal.open(lab.project)
    assert journal.report().devices[name].outcome == "in_flight"
    assert boot_state(lab, name)["state"] == "idle" and device_installs(lab, name) == 0
    return journal


def steps_after_resume(journal: Journal, name: str) -> list[str]:
    events = journal.events()
    start = max(i for i, e in enumerate(events) if e["event"] in ("resumed", "retry"))
    return [e["step"] for e in events[start:]
            if e["event"] == "device_step" and e.get("device") == name]


def assert_committed_once(lab, name: str, version: str = "1.1.0") -> None:
    doc = boot_state(lab, name)
    active = doc["slots"][doc["active"]]
    assert doc["state"] == "idle" and doc["committed_slot"] == doc["active"], doc
    assert active["committed"] and active["version"] == version, doc
    assert device_installs(lab, name) == 1


def test_resume_activates_a_slot_installed_after_the_controller_died(lab1):
    bundle = build(lab1)
    journal = interrupted_in_check(lab1, bundle)
    on_device(lab1, "berlin-01", "install", str(bundle))  # written; never activated
    assert boot_state(lab1, "berlin-01")["state"] == "installed"

    res = run_cli(lab1.project.root, "ota", "resume", journal.id)
    assert res.exit_code == 0, res.stdout + res.stderr
    assert_committed_once(lab1, "berlin-01")
    steps = steps_after_resume(journal, "berlin-01")
    assert "ota.activate" in steps and "ota.install" not in steps


def test_resume_commits_a_device_left_on_trial(lab1):
    """The controller died after the reboot: resume verifies and really commits (the device
    says so), without installing or rebooting again."""
    bundle = build(lab1)
    journal = interrupted_in_check(lab1, bundle)
    on_device(lab1, "berlin-01", "install", str(bundle), "--activate")
    lab1.reboot("berlin-01")
    boots = boot_state(lab1, "berlin-01")["boots"]
    assert boot_state(lab1, "berlin-01")["state"] == "trial"

    res = run_cli(lab1.project.root, "ota", "resume", journal.id)
    assert res.exit_code == 0, res.stdout + res.stderr
    assert journal.report().devices["berlin-01"].outcome == "succeeded"
    assert_committed_once(lab1, "berlin-01")
    assert boot_state(lab1, "berlin-01")["boots"] == boots
    assert steps_after_resume(journal, "berlin-01") == ["ota.check", "ota.verify", "ota.commit"]


def test_resume_waits_for_a_device_that_is_rebooting(lab1):
    """Offline when resume starts (its reboot under way, policy `skip`): resume waits for it
    (bounded by offline_wait), then settles it."""
    bundle = build(lab1)
    root = lab1.project.root
    journal = interrupted_in_check(lab1, bundle)
    on_device(lab1, "berlin-01", "install", str(bundle), "--activate")
    lab1.fault("berlin-01", "offline")  # powered down for the reboot
    proc = start_fleet(root, "ota", "resume", journal.id)
    wait_for_event(root, proc, lambda e: e.get("event") == "device_waiting"
                   and e.get("device") == "berlin-01")
    lab1.reboot("berlin-01")  # the boot logic runs; the box is still away
    lab1.fault("berlin-01", "online")
    assert proc.wait(120) == 0, proc.stderr.read().decode() if proc.stderr else ""
    assert journal.report().devices["berlin-01"].outcome == "succeeded"
    assert_committed_once(lab1, "berlin-01")


def test_retry_accepts_a_device_on_trial_at_the_target(lab1):
    bundle = build(lab1)
    root = lab1.project.root
    journal = interrupted_in_check(lab1, bundle)
    assert run_cli(root, "ota", "abort", journal.id).exit_code == 0
    on_device(lab1, "berlin-01", "install", str(bundle), "--activate")
    lab1.reboot("berlin-01")
    assert boot_state(lab1, "berlin-01")["state"] == "trial"

    res = run_cli(root, "ota", "retry", journal.id, "--failed")
    assert res.exit_code == 0, res.stdout + res.stderr
    assert journal.report().devices["berlin-01"].outcome == "succeeded"
    assert_committed_once(lab1, "berlin-01")


def test_resume_installs_again_when_the_held_slot_fails_its_rehash(lab1):
    """The slot's record names the target's manifest hash, but a file in it was damaged
    since: the hash of the record alone is not trusted, the files are re-hashed."""
    bundle = build(lab1)
    journal = interrupted_in_check(lab1, bundle)
    on_device(lab1, "berlin-01", "install", str(bundle))
    doc = boot_state(lab1, "berlin-01")
    slot = "b" if doc["active"] == "a" else "a"
    version_file = lab1.layout("berlin-01").slot(slot) / "opt/edgefleet/VERSION"
    version_file.write_text("9.9.9\n")

    res = run_cli(lab1.project.root, "ota", "resume", journal.id)
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "ota.install" in steps_after_resume(journal, "berlin-01")
    assert device_installs(lab1, "berlin-01") == 2  # the damaged copy, then a good one
    assert version_file.read_text() == "1.1.0\n"
    assert boot_state(lab1, "berlin-01")["state"] == "idle"


def test_retry_waits_for_a_device_the_dead_controller_left_rebooting(lab1):
    """Interrupted, then aborted (the device still mid-update), then retried while the
    device is away for its reboot: retry waits for it (policy `skip` notwithstanding)."""
    bundle = build(lab1)
    root = lab1.project.root
    journal = interrupted_in_check(lab1, bundle)
    assert run_cli(root, "ota", "abort", journal.id).exit_code == 0
    on_device(lab1, "berlin-01", "install", str(bundle), "--activate")
    lab1.fault("berlin-01", "offline")
    proc = start_fleet(root, "ota", "retry", journal.id, "--failed")
    wait_for_event(root, proc, lambda e: e.get("event") == "device_waiting"
                   and e.get("device") == "berlin-01")
    lab1.reboot("berlin-01")
    lab1.fault("berlin-01", "online")
    assert proc.wait(120) == 0, proc.stderr.read().decode() if proc.stderr else ""
    assert journal.report().devices["berlin-01"].outcome == "succeeded"
    assert_committed_once(lab1, "berlin-01")


def test_resume_counts_a_device_that_fell_back_by_itself_as_failed_not_installs_again(lab1):
    """The controller died while the device was on its trial boots, and they ran out: the
    device fell back to its old version by itself. The controller that watched would have
    counted it failed; resume installed the bundle a second time and called it succeeded.
    `retry --failed` is the operator's way to try that image again."""
    bundle = build(lab1)
    journal = interrupted_in_check(lab1, bundle)
    on_device(lab1, "berlin-01", "install", str(bundle), "--activate")
    lab1.fault("berlin-01", "fallback")
    lab1.reboot("berlin-01")
    doc = boot_state(lab1, "berlin-01")
    assert doc["state"] == "idle" and doc["slots"][doc["active"]]["version"] == "1.0.0", doc

    res = run_cli(lab1.project.root, "ota", "resume", journal.id)
    assert res.exit_code == 1, res.stdout + res.stderr
    device = journal.report().devices["berlin-01"]
    assert device.outcome == "failed" and "fell back" in device.reason, device
    assert device_installs(lab1, "berlin-01") == 1  # on the device: no second install
    assert "ota.install" not in steps_after_resume(journal, "berlin-01")

    res = run_cli(lab1.project.root, "ota", "retry", journal.id, "--failed")
    assert res.exit_code == 0, res.stdout + res.stderr
    assert versions(lab1) == {"berlin-01": "1.1.0"}
