"""Rollouts over a real lab (OpenSSH sshd per device, the real agent, the lab's boot logic),
with faults injected through the lab: offline, slow (hang), disk-full, a failing self-test."""

from __future__ import annotations

import json
import threading

import pytest
from lab_rollouts import build, lab_project, rollout, versions
from labkit import run_cli

from fleet.rollout.journal import Journal
from fleet.rollout.policy import Policy


@pytest.fixture
def lab(tmp_path):
    lab = lab_project(tmp_path, 2, 2)  # berlin-01 (canary), berlin-02, lisbon-01, lisbon-02
    yield lab
    lab.down()


def on(event_name, device, action):
    """An event sink that runs `action` once, when `device` reaches `event_name`."""
    fired = threading.Event()

    def sink(event):
        if event["event"] == event_name and event.get("device") == device and not fired.is_set():
            fired.set()
            action()

    return sink


def test_canary_then_batches_with_a_rollback_counted(lab):
    bundle = build(lab, fail_on=("lisbon-01",))
    policy = Policy(batches=(1, "50%", "100%"), canary_tags=("canary",), concurrency=2,
                    max_fail_percentage=50)
    report = rollout(lab, bundle, policy)
    # the canary first; 50% of the whole selection; the rest
    assert report.batches == [["berlin-01"], ["berlin-02", "lisbon-01"], ["lisbon-02"]]
    assert report.status == "completed"
    assert report.counts() == {"succeeded": 3, "failed": 1}
    bad = report.devices["lisbon-01"]  # 1 of 2 in its batch: 50% does not exceed 50%
    assert "rolled back to 1.0.0" in bad.reason and "camera pipeline did not start" in bad.reason
    assert versions(lab) == {"berlin-01": "1.1.0", "berlin-02": "1.1.0",
                             "lisbon-01": "1.0.0", "lisbon-02": "1.1.0"}
    # status replays the journal; plan now sees who is current
    res = run_cli(lab.project.root, "ota", "status", report.id, "--json")
    listed = {d["name"]: d for d in json.loads(res.stdout)["devices"]}  # a named list
    assert listed["lisbon-01"]["outcome"] == "failed"
    res = run_cli(lab.project.root, "ota", "plan", str(bundle), "-i", "lab", "--json")
    states = {f["name"]: f["state"] for f in json.loads(res.stdout)["devices"]}
    assert states == {"berlin-01": "current", "berlin-02": "current", "lisbon-01": "change",
                      "lisbon-02": "current"}


def test_batch_over_max_fail_percentage_stops_and_later_batches_are_untouched(lab):
    bundle = build(lab, fail_on=("berlin-01",))
    report = rollout(lab, bundle, Policy(batches=(1, "100%"), max_fail_percentage=0))
    assert report.status == "stopped"
    assert report.reason == "batch 1: 1/1 failed (100%) exceeds max_fail_percentage 0%"
    assert report.with_outcome("not-run") == ["berlin-02", "lisbon-01", "lisbon-02"]
    assert set(versions(lab).values()) == {"1.0.0"}
    res = run_cli(lab.project.root, "--no-color", "ota", "status", report.id)
    assert "exceeds max_fail_percentage 0%" in res.stdout


def test_max_failures_across_batches_and_offline_mid_batch(lab):
    lab.fault("berlin-02", "disk-full")  # its install fails: no space
    lab.fault("lisbon-01", "disk-full")
    policy = Policy(batches=(1,), max_fail_percentage=100, max_failures=2, concurrency=1)
    report = rollout(lab, build(lab), policy)
    assert report.status == "stopped"
    assert report.reason == "max_failures reached: 2 devices failed (limit 2)"
    assert [report.devices[n].outcome for n in ("berlin-01", "berlin-02", "lisbon-01",
                                                 "lisbon-02")] == [
        "succeeded", "failed", "failed", "not-run"]
    assert "No space left" in report.devices["berlin-02"].reason


def test_device_going_offline_mid_batch_is_skipped_and_listed(lab):
    # berlin-01 finishes, then lisbon-01 drops off the network before its turn.
    sink = on("device_finished", "berlin-01", lambda: lab.fault("lisbon-01", "offline"))
    report = rollout(lab, build(lab), Policy(batches=("100%",), concurrency=1), sinks=[sink])
    assert report.devices["lisbon-01"].outcome == "skipped"
    assert report.devices["lisbon-01"].reason == "offline"
    assert report.counts() == {"succeeded": 3, "skipped": 1}
    res = run_cli(lab.project.root, "--no-color", "ota", "status", report.id)
    assert "lisbon-01" in res.stdout and "skipped" in res.stdout


def test_offline_wait_picks_the_device_up_when_it_returns(lab):
    lab.fault("berlin-02", "offline")
    sink = on("device_waiting", "berlin-02", lambda: lab.fault("berlin-02", "online"))
    policy = Policy(batches=("100%",), concurrency=1, offline="wait", offline_wait=60)
    report = rollout(lab, build(lab), policy, sinks=[sink], limit="berlin-01,berlin-02")
    assert report.counts() == {"succeeded": 2}


def test_hung_device_fails_at_device_timeout_and_counts(lab):
    lab.fault("berlin-02", "slow", seconds=120)  # every agent call on it hangs for 2 minutes
    policy = Policy(batches=("100%",), concurrency=2, device_timeout=15, max_fail_percentage=50)
    report = rollout(lab, build(lab), policy, limit="berlin-01,berlin-02")
    dev = report.devices["berlin-02"]
    assert dev.outcome == "failed" and "device_timeout 15s" in dev.reason
    assert 15 <= dev.duration < 120  # given up at the timeout, not after the hang ended
    assert report.failures() == 1 and report.devices["berlin-01"].outcome == "succeeded"
    assert versions(lab)["berlin-02"] == "1.0.0"  # stuck in its first agent call: untouched


def test_device_back_on_its_old_version_after_the_reboot_is_not_counted_updated(lab):
    """berlin-02 reboots but falls back to its committed slot by itself: the rollout counts
    it failed on its own post-reboot report, never as updated."""
    lab.fault("berlin-02", "fallback")
    policy = Policy(batches=("100%",), concurrency=2, max_fail_percentage=50)
    report = rollout(lab, build(lab), policy, limit="berlin-01,berlin-02")
    assert report.counts() == {"succeeded": 1, "failed": 1}
    bad = report.devices["berlin-02"]
    assert bad.outcome == "failed" and "reports version 1.0.0, expected 1.1.0" in bad.reason
    assert versions(lab) == {"berlin-01": "1.1.0", "berlin-02": "1.0.0", "lisbon-01": "1.0.0",
                             "lisbon-02": "1.0.0"}


def test_second_rollout_on_overlapping_devices_is_refused_with_the_first_id(lab):
    bundle = build(lab)
    first = rollout(lab, bundle, Policy(batches=(1,), pause_after_batch=True))
    assert first.status == "paused"
    res = run_cli(lab.project.root, "ota", "rollout", str(bundle), "-i", "lab",
                  "--site", "berlin")
    assert res.exit_code == 2
    assert f"rollout {first.id} (paused) already targets 2 of these devices" in res.stderr
    res = run_cli(lab.project.root, "ota", "abort", first.id)
    assert res.exit_code == 0 and Journal.open(lab.project, first.id).report().status == "aborted"
    res = run_cli(lab.project.root, "ota", "rollout", str(bundle), "-i", "lab",
                  "--site", "berlin", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout.splitlines()[-1])["report"]["counts"] == {
        "unchanged": 1, "succeeded": 1}
