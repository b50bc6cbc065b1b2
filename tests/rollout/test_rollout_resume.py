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
    return subprocess.Popen([sys.executable, "-m", "fleet.cli.app", "--project", str(project),
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
    # berlin-02 has installed, rebooted into the new slot and passed verify; the controller
    # dies as it commits (before or after the device wrote it: resume must cope with both).
    wait_for_event(root, proc, lambda e: e.get("event") == "device_step"
                   and e.get("device") == "berlin-02" and e.get("step") == "ota.commit")
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
    assert after.devices["berlin-02"].reason.startswith("verified after resume")
    installs = Counter(e["device"] for e in journal.events() if e["event"] == "device_installing")
    assert installs == {"berlin-01": 1, "berlin-02": 1, "berlin-03": 1}
    assert set(versions(lab).values()) == {"1.1.0"}
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
