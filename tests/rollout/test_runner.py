"""The batched runner's rules, with a plain local Nornir task (no devices needed).

The task writes a marker file per device, fails for devices listed in
`fail`, blocks until released for devices listed in `hang`: real work on the
local disk, not a stand-in for any device. Device faults over SSH are in
test_rollout_lab.py.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from nornir.core import Nornir
from nornir.core.inventory import Defaults, Groups, Host, Hosts, Inventory
from nornir.core.task import Result, Task

from fleet.rollout.policy import Policy
from fleet.rollout.report import COMPLETED, PAUSED, STOPPED
from fleet.rollout.runner import Control, RolloutRunner

RELEASE = threading.Event()


@pytest.fixture(autouse=True)
def _release_hung_tasks():
    RELEASE.clear()
    yield
    RELEASE.set()


def fleet(sites: dict[str, int], tags: dict[str, list[str]] | None = None) -> Nornir:
    hosts = Hosts()
    for site, count in sites.items():
        for i in range(1, count + 1):
            name = f"{site}-{i:02d}"
            hosts[name] = Host(name, data={"site": site, "tags": (tags or {}).get(name, [])})
    return Nornir(inventory=Inventory(hosts=hosts, groups=Groups(), defaults=Defaults()))


def write_marker(task: Task, out: Path, fail: frozenset[str] = frozenset(),
                 hang: frozenset[str] = frozenset(), noop: frozenset[str] = frozenset()) -> Result:
    name = task.host.name
    if name in hang:
        RELEASE.wait(30)
    if name in fail:
        return Result(task.host, failed=True, result=f"{name} refused the update")
    if name in noop:
        return Result(task.host, changed=False, result="already there")
    (out / name).write_text("done")
    return Result(task.host, changed=True, result="written")


def run(nr: Nornir, policy: Policy, tmp_path: Path, **kw):
    events: list[dict] = []
    gate = kw.pop("gate", None)
    runner = RolloutRunner(policy, on_event=[events.append], gate=gate,
                           probe=kw.pop("probe", None), control=kw.pop("control", None),
                           plan=kw.pop("plan", None), prior=kw.pop("prior", None))
    result = nr.with_runner(runner).run(task=write_marker, out=tmp_path, **kw)
    return runner.report, result, events


def test_batches_run_in_order_and_all_succeed(tmp_path):
    nr = fleet({"berlin": 3, "lisbon": 3, "osaka": 4})
    report, result, events = run(nr, Policy(batches=(1, "30%", "100%"), concurrency=4), tmp_path)
    assert report.status == COMPLETED
    assert [len(b) for b in report.batches] == [1, 3, 6]
    assert report.counts() == {"succeeded": 10}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(nr.inventory.hosts)
    starts = [e["batch"] for e in events if e["event"] == "device_started"]
    assert starts == sorted(starts)  # batch N+1 starts only after batch N finished
    assert not result.failed


def test_failed_device_is_a_failed_result_not_an_exception(tmp_path):
    nr = fleet({"berlin": 4})
    report, result, _ = run(nr, Policy(batches=(2,), max_fail_percentage=50), tmp_path,
                            fail=frozenset({"berlin-02"}))
    assert result["berlin-02"].failed and "refused the update" in report.devices["berlin-02"].reason
    assert report.status == COMPLETED and report.counts() == {"succeeded": 3, "failed": 1}


def test_exceeding_max_fail_percentage_stops_later_batches_untouched(tmp_path):
    nr = fleet({"berlin": 6})
    policy = Policy(batches=(2,), max_fail_percentage=49, concurrency=1)
    report, _, _ = run(nr, policy, tmp_path, fail=frozenset({"berlin-03"}))
    assert report.status == STOPPED
    assert "batch 2: 1/2 failed (50%) exceeds max_fail_percentage 49%" in report.reason
    assert [report.devices[f"berlin-0{i}"].outcome for i in range(1, 7)] == [
        "succeeded", "succeeded", "failed", "not-run", "not-run", "not-run"]
    assert not (tmp_path / "berlin-05").exists()


def test_reaching_exactly_max_fail_percentage_does_not_stop(tmp_path):
    nr = fleet({"berlin": 4})
    report, _, _ = run(nr, Policy(batches=(2,), max_fail_percentage=50), tmp_path,
                       fail=frozenset({"berlin-01"}))
    assert report.status == COMPLETED and report.counts()["succeeded"] == 3


def test_without_threshold_only_a_wholly_failed_batch_stops(tmp_path):
    nr = fleet({"berlin": 6})
    report, _, _ = run(nr, Policy(batches=(2,)), tmp_path,
                       fail=frozenset({"berlin-01", "berlin-03", "berlin-04"}))
    assert report.status == STOPPED and report.reason == "batch 2: every device failed"
    assert report.devices["berlin-05"].outcome == "not-run"


def test_max_failures_counts_across_batches(tmp_path):
    nr = fleet({"berlin": 8})
    policy = Policy(batches=(2,), max_fail_percentage=60, max_failures=2, concurrency=1)
    report, _, _ = run(nr, policy, tmp_path, fail=frozenset({"berlin-01", "berlin-04"}))
    assert report.status == STOPPED
    assert report.reason == "max_failures reached: 2 devices failed (limit 2)"
    assert report.with_outcome("not-run") == [f"berlin-0{i}" for i in range(5, 9)]


def test_device_timeout_fails_and_counts(tmp_path):
    nr = fleet({"berlin": 3})
    policy = Policy(batches=(3,), device_timeout=0.5, max_fail_percentage=50)
    report, result, _ = run(nr, policy, tmp_path, hang=frozenset({"berlin-02"}))
    dev = report.devices["berlin-02"]
    assert dev.outcome == "failed" and "device_timeout 0.5s" in dev.reason
    assert result["berlin-02"].failed and report.counts()["succeeded"] == 2


def test_concurrency_and_per_site_limits_hold(tmp_path):
    nr = fleet({"berlin": 4, "lisbon": 4})
    policy = Policy(batches=("100%",), concurrency=3, per_site_concurrency=1)
    _, _, events = run(nr, policy, tmp_path)
    live: dict[str, str] = {}
    peak, site_peak = 0, 0
    for e in events:
        if e["event"] == "device_started":
            live[e["device"]] = e["device"].split("-")[0]
        elif e["event"] == "device_finished":
            live.pop(e["device"], None)
        peak = max(peak, len(live))
        site_peak = max([site_peak, *(list(live.values()).count(s) for s in set(live.values()))])
    assert peak <= 3 and site_peak == 1


def test_gate_decides_success_not_the_exit_status(tmp_path):
    def gate(task: Task) -> Result:
        ok = task.host.name != "berlin-02"
        return Result(task.host, failed=not ok,
                      result="reports 1.0.0, expected 1.1.0 (rolled back)")

    nr = fleet({"berlin": 3})
    report, _, _ = run(nr, Policy(batches=(3,), max_fail_percentage=50), tmp_path, gate=gate)
    assert report.devices["berlin-02"].outcome == "failed"
    assert "health gate: reports 1.0.0, expected 1.1.0" in report.devices["berlin-02"].reason


def test_accept_judges_the_reported_result_without_another_call(tmp_path):
    nr = fleet({"berlin": 2})
    runner = RolloutRunner(Policy(max_fail_percentage=50),
                           accept=lambda multi: None if multi.host.name == "berlin-01"
                           else "reported 1.0.0 after the reboot")
    result = nr.with_runner(runner).run(task=write_marker, out=tmp_path)
    assert runner.report.devices["berlin-02"].outcome == "failed"
    reason = runner.report.devices["berlin-02"].reason
    assert reason == "health gate: reported 1.0.0 after the reboot"
    assert result["berlin-02"].failed and not result["berlin-01"].failed


def test_unchanged_devices_are_not_failures(tmp_path):
    nr = fleet({"berlin": 2})
    report, _, _ = run(nr, Policy(), tmp_path, noop=frozenset({"berlin-01"}))
    assert report.counts() == {"unchanged": 1, "succeeded": 1}


def test_pause_after_batch_stops_cleanly(tmp_path):
    nr = fleet({"berlin": 4})
    report, _, _ = run(nr, Policy(batches=(1, 3), pause_after_batch=True), tmp_path)
    assert report.status == PAUSED and "paused after batch 1" in report.reason
    assert report.counts() == {"succeeded": 1, "pending": 3}


def test_abort_stops_scheduling_and_lets_in_flight_finish(tmp_path):
    control = Control()
    nr = fleet({"berlin": 6})
    events: list[dict] = []

    def on_event(e):
        events.append(e)
        if e["event"] == "device_finished" and e["device"] == "berlin-01":
            control.abort("operator abort")

    runner = RolloutRunner(Policy(batches=(2,), concurrency=1), on_event=[on_event],
                           control=control)
    nr.with_runner(runner).run(task=write_marker, out=tmp_path)
    report = runner.report
    assert report.status == "aborted" and report.reason == "operator abort"
    assert report.devices["berlin-01"].outcome == "succeeded"
    assert report.with_outcome("not-run") == [f"berlin-0{i}" for i in range(2, 7)]


def test_offline_policies(tmp_path):
    nr = fleet({"berlin": 3})
    down = {"berlin-02"}

    def probe(host):
        return host.name not in down

    skip, _, _ = run(nr, Policy(offline="skip"), tmp_path, probe=probe)
    assert skip.devices["berlin-02"].outcome == "skipped" and skip.status == COMPLETED
    fail, _, _ = run(nr, Policy(offline="fail", max_fail_percentage=50), tmp_path, probe=probe)
    assert fail.devices["berlin-02"].outcome == "failed"
    nr = fleet({"berlin": 3})  # Nornir leaves hosts that failed out of later runs
    waited, _, _ = run(nr, Policy(offline="wait", offline_wait=0.3, max_fail_percentage=50),
                       tmp_path, probe=probe)
    assert "after waiting 0.3s" in waited.devices["berlin-02"].reason


def test_offline_wait_proceeds_when_the_device_returns(tmp_path):
    nr = fleet({"berlin": 2})
    down = {"berlin-02"}
    events: list[dict] = []

    def on_event(e):
        events.append(e)
        if e["event"] == "device_waiting":
            down.clear()  # the device comes back while we wait

    runner = RolloutRunner(Policy(offline="wait", offline_wait=20), on_event=[on_event],
                           probe=lambda h: h.name not in down)
    nr.with_runner(runner).run(task=write_marker, out=tmp_path)
    assert runner.report.counts() == {"succeeded": 2}


def test_resume_skips_finished_and_verifies_in_flight(tmp_path):
    nr = fleet({"berlin": 4})
    (tmp_path / "berlin-02").write_text("done")  # in flight when the controller died, finished

    def gate(task: Task) -> Result:
        return Result(task.host, failed=not (tmp_path / task.host.name).exists(), result="")

    prior = {"berlin-01": "succeeded", "berlin-02": "in_flight"}
    report, _, events = run(nr, Policy(batches=(2,)), tmp_path, gate=gate,
                            plan=[["berlin-01", "berlin-02"], ["berlin-03", "berlin-04"]],
                            prior=prior)
    installs = [e["device"] for e in events if e["event"] == "device_installing"]
    assert installs == ["berlin-03", "berlin-04"]
    assert report.devices["berlin-02"].reason.startswith("verified after resume")
    assert report.status == COMPLETED and report.counts() == {"succeeded": 4}


def test_step_events_name_the_subtasks(tmp_path):
    def two_steps(task: Task) -> Result:
        task.run(task=lambda t: Result(t.host, changed=True), name="upload")
        task.run(task=lambda t: Result(t.host, changed=True), name="install")
        return Result(task.host, changed=True)

    events: list[dict] = []
    nr = fleet({"berlin": 1})
    nr.with_runner(RolloutRunner(Policy(), on_event=[events.append])).run(task=two_steps)
    assert [e["step"] for e in events if e["event"] == "device_step"] == ["upload", "install"]
