"""The verbs on a rollout id (start, pause/resume, retry, abort) with a local Nornir task:
what the journal says after each, and that finished devices are never run again."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from nornir.core import Nornir
from nornir.core.inventory import Defaults, Groups, Host, Hosts, Inventory
from nornir.core.task import Result, Task

from fleet.errors import FleetError, UsageError
from fleet.project import Project
from fleet.rollout import engine
from fleet.rollout.journal import Journal
from fleet.rollout.policy import Policy
from fleet.rollout.work import KINDS, work_from_header


class MarkerWork:
    """Writes one marker file per device and counts runs; `broken` devices fail. A whole
    `Work` (fleet/rollout/work.py), registered as kind "marker" by the tests that resume it."""

    kind = "marker"
    version = "v2"
    gate = None
    made: dict[Path, MarkerWork] = {}  # out folder -> the work, so from_header finds its counts

    def __init__(self, out: Path, broken: set[str]) -> None:
        self.out, self.broken = out, broken
        self.runs: Counter[str] = Counter()
        MarkerWork.made[out] = self

    @classmethod
    def from_header(cls, project, header, progress=None) -> MarkerWork:
        return cls.made[Path(header["artifact"])]

    @property
    def artifact(self) -> Path:
        return self.out

    def decide(self, task: Task) -> Result:
        done = (self.out / task.host.name).exists()
        return Result(task.host, result={"state": "current" if done else "change"})

    @property
    def apply(self):
        def mark(task: Task) -> Result:
            self.runs[task.host.name] += 1
            if task.host.name in self.broken:
                return Result(task.host, failed=True, result="broken")
            (self.out / task.host.name).write_text("v2")
            return Result(task.host, changed=True)

        return mark

    def params(self):
        return {}

    def header(self):
        return {"kind": self.kind, "artifact": str(self.out)}

    def accept(self, multi) -> str | None:
        return None if (self.out / multi[0].host.name).exists() else "no marker written"

    def verify(self, task: Task) -> Result:
        return Result(task.host, failed=not (self.out / task.host.name).exists())

    def probe(self, nr):
        return None

    def cancel(self, host) -> None:
        pass


def fleet(n: int) -> Nornir:
    hosts = Hosts({f"d{i}": Host(f"d{i}", data={"site": "s"}) for i in range(1, n + 1)})
    return Nornir(inventory=Inventory(hosts=hosts, groups=Groups(), defaults=Defaults()))


def nr_for(names):
    nr = fleet(6)
    return nr.filter(filter_func=lambda h: h.name in names)


@pytest.fixture
def project(tmp_path):
    (tmp_path / "out").mkdir()
    return Project.locate(tmp_path)


def test_pause_resume_until_complete_runs_each_device_once(project, tmp_path):
    work = MarkerWork(tmp_path / "out", set())
    policy = Policy(batches=(2,), pause_after_batch=True)
    report = engine.start(project, fleet(6), work, policy, selection={})
    assert report.status == "paused" and report.counts() == {"succeeded": 2, "pending": 4}
    report = engine.resume(project, report.id, nr_for, work)
    assert report.status == "paused" and report.counts() == {"succeeded": 4, "pending": 2}
    report = engine.resume(project, None, nr_for, work)  # the latest rollout
    assert report.status == "completed" and report.counts() == {"succeeded": 6}
    assert set(work.runs.values()) == {1}
    with pytest.raises(UsageError, match="nothing to resume"):
        engine.resume(project, report.id, nr_for, work)


def test_retry_failed_reruns_only_failed_and_not_run(project, tmp_path):
    work = MarkerWork(tmp_path / "out", {"d2"})
    report = engine.start(project, fleet(6), work, Policy(batches=(2,), max_fail_percentage=0),
                          selection={})
    assert report.status == "stopped" and report.with_outcome("not-run") == ["d3", "d4", "d5",
                                                                              "d6"]
    work.broken.clear()  # the cause is fixed
    report = engine.retry(project, report.id, nr_for, work)
    assert report.status == "completed" and report.counts() == {"succeeded": 6}
    assert work.runs == Counter({"d1": 1, "d2": 2, "d3": 1, "d4": 1, "d5": 1, "d6": 1})
    with pytest.raises(UsageError, match="no failed or skipped devices"):
        engine.retry(project, report.id, nr_for, work)


def test_abort_closes_a_paused_rollout_and_releases_its_devices(project, tmp_path):
    work = MarkerWork(tmp_path / "out", set())
    report = engine.start(project, fleet(4), work, Policy(batches=(1,), pause_after_batch=True),
                          selection={})
    report = engine.abort(project, report.id, "change freeze")
    assert report.status == "aborted" and report.reason == "change freeze"
    assert report.with_outcome("not-run") == ["d2", "d3", "d4"]
    assert engine.exit_code(report) == 1
    again = engine.start(project, fleet(4), work, Policy(), selection={})
    assert again.counts() == {"succeeded": 4}
    events = Counter(e["event"] for e in Journal.open(project, report.id).events())
    assert events["abort_requested"] == 1 and events["run_finished"] == 2


def test_any_registered_kind_resumes_and_retries_from_its_journal(project, tmp_path,
                                                                    monkeypatch):
    """`resume` and `retry` rebuild the work from the journal header by its kind's name."""
    monkeypatch.setitem(KINDS, "marker", MarkerWork)
    work = MarkerWork(tmp_path / "out", {"d3"})
    report = engine.start(project, fleet(4), work, Policy(batches=(2,), pause_after_batch=True),
                          selection={})
    header = engine.status(project, report.id).header
    assert header["kind"] == "marker" and work_from_header(project, header) is work
    report = engine.resume(project, report.id, nr_for, work_from_header(project, header))
    assert report.status == "completed" and report.with_outcome("failed") == ["d3"]
    work.broken.clear()
    report = engine.retry(project, report.id, nr_for, work_from_header(project, header))
    assert report.counts() == {"succeeded": 4}
    with pytest.raises(UsageError, match="`fleet marker retry"):
        engine.resume(project, report.id, nr_for, work)


def test_a_kind_no_one_registered_is_named_with_the_known_ones(project):
    with pytest.raises(FleetError, match=r"rollout kind 'config' is not one this controller "
                                         r"knows \(app, (marker, )?ota\)"):
        work_from_header(project, {"kind": "config", "artifact": "x"})

