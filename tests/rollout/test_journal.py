"""The journal: fsync'd append-only events, replay, run lock, overlap refusal, abort polling."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from fleet.project import Project
from fleet.rollout.journal import INTERRUPTED, Journal, RolloutConflict, rollouts_dir


@pytest.fixture
def project(tmp_path):
    return Project.locate(tmp_path)


def test_events_replay_to_state(project):
    j = Journal.create(project, header={"artifact": "os.bundle"}, devices=["a", "b"])
    j.append({"event": "planned", "batches": [["a"], ["b"]], "sites": {"a": "x", "b": "y"}})
    j.append({"event": "device_started", "device": "a", "batch": 1})
    j.append({"event": "device_finished", "device": "a", "outcome": "succeeded"})
    report = Journal.open(project, j.id).report()
    assert report.id == j.id and report.header["artifact"] == "os.bundle"
    assert report.devices["a"].outcome == "succeeded" and report.devices["b"].outcome == "pending"
    assert report.status == "running"  # we still hold the run lock
    assert oct(j.path.stat().st_mode & 0o777) == "0o600"


def test_a_dead_controller_leaves_an_interrupted_rollout(project):
    j = Journal.create(project, header={}, devices=["a"])
    j.append({"event": "device_started", "device": "a", "batch": 1})
    j.release()
    report = Journal.open(project, j.id).report()
    assert report.status == INTERRUPTED and report.devices["a"].outcome == "in_flight"


def test_torn_last_line_is_ignored(project):
    j = Journal.create(project, header={}, devices=["a"])
    with j.path.open("ab") as fh:
        fh.write(b'{"event": "device_fin')
    assert [e["event"] for e in j.events()] == ["rollout"]


def test_overlapping_rollout_is_refused_with_the_first_id(project):
    first = Journal.create(project, header={}, devices=["a", "b"])
    with pytest.raises(RolloutConflict) as err:
        Journal.create(project, header={}, devices=["b", "c"])
    assert first.id in str(err.value) and "(b)" in str(err.value)
    Journal.create(project, header={}, devices=["c"])  # disjoint devices are fine
    first.append({"event": "run_finished", "status": "completed"})
    Journal.create(project, header={}, devices=["a", "b"])  # finished: devices released


def test_second_process_cannot_run_the_same_rollout(project, tmp_path):
    j = Journal.create(project, header={}, devices=["a"])
    code = textwrap.dedent(f"""
        from fleet.project import Project
        from fleet.rollout.journal import Journal
        from fleet.errors import UsageError
        j = Journal.open(Project.locate({str(tmp_path)!r}), {j.id!r})
        print("running" if j.is_running() else "idle")
        try:
            j.acquire()
        except UsageError as exc:
            print(exc.line())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.splitlines()[0] == "running" and "is running in another process" in out
    j.release()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.splitlines() == ["idle"]


def test_abort_poll_sees_events_from_other_writers(project):
    j = Journal.create(project, header={}, devices=["a"])
    assert j.abort_poll() is None
    other = Journal.open(project, j.id)
    other.append({"event": "abort_requested", "reason": "operator says stop"})
    assert j.abort_poll() == "operator says stop"
    assert j.abort_poll() is None


def test_open_unknown_id_lists_recent(project):
    Journal.create(project, header={}, devices=["a"], rollout_id="r-known")
    with pytest.raises(Exception, match="no rollout 'r-nope'.*recent rollouts: r-known"):
        Journal.open(project, "r-nope")
    assert Journal.open(project).id == "r-known"
    assert oct(rollouts_dir(project).stat().st_mode & 0o777) == "0o700"
    assert os.path.exists(rollouts_dir(project) / "r-known.lock")
