"""Pause after the current batch, asked from another process through the journal
(`fleet.rollout.pause.request_pause`, what the console's Pause button calls)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_runner import fleet, write_marker

from fleet.errors import UsageError
from fleet.project import Project
from fleet.rollout.journal import Journal
from fleet.rollout.pause import request_pause
from fleet.rollout.policy import Policy
from fleet.rollout.report import PAUSED
from fleet.rollout.runner import Control, RolloutRunner


def test_a_pause_request_stops_after_the_batch_in_flight(tmp_path: Path):
    project = Project.locate(tmp_path)
    nr = fleet({"berlin": 5})
    journal = Journal.create(project, header={}, devices=list(nr.inventory.hosts))
    journal.watch_from_now()

    def pause_in_batch_two(event):
        if event["event"] == "device_finished" and event["device"] == "berlin-02":
            request_pause(project, journal.id, "looks odd")  # another writer, same file

    runner = RolloutRunner(Policy(batches=(1, 2, 2), concurrency=1),
                           control=Control(journal.abort_poll, journal.pause_poll),
                           on_event=[journal, pause_in_batch_two])
    nr.with_runner(runner).run(task=write_marker, out=tmp_path)
    report = journal.report()
    assert report.status == PAUSED
    assert report.reason == "paused after batch 2 (looks odd); run `fleet ota resume`"
    # the batch in flight finished whole; the next one was not started
    assert report.counts() == {"succeeded": 3, "pending": 2}
    assert report.pause_requested == ""


def test_pause_is_refused_when_nothing_runs(tmp_path: Path):
    project = Project.locate(tmp_path)
    journal = Journal.create(project, header={}, devices=["a"])
    journal.release()  # the controller is gone: interrupted, nothing to pause
    with pytest.raises(UsageError, match="nothing to pause"):
        request_pause(project, journal.id)
    assert not any(e["event"] == "pause_requested" for e in journal.events())


def test_an_old_pause_request_does_not_pause_the_resumed_run(tmp_path: Path):
    project = Project.locate(tmp_path)
    journal = Journal.create(project, header={}, devices=["a"])
    journal.append({"event": "pause_requested", "reason": "yesterday"})
    journal.watch_from_now()  # what a resume does before running again
    assert journal.pause_poll() is None
    assert journal.abort_poll() is None
