"""`fleet app deploy` on a real lab: batches with a canary, a code-only version moving one
blob, a crashing version rolled back by the canary itself and the rollout stopping there,
the overlap guard and resume of a paused deploy, then `fleet app rollback` and `remove`."""

from __future__ import annotations

import json

import pytest
from appdeploy_kit import (
    CODE,
    NAME,
    Steps,
    agent,
    app_on,
    bundle,
    crashing_code,
    deploy,
    outcomes,
    plan,
    work,
)
from lab_rollouts import lab_project
from labkit import run_cli

from fleet.errors import FleetError
from fleet.rollout import engine
from fleet.rollout.policy import Policy
from fleet.rollout.settings import nornir_for


@pytest.fixture
def lab(tmp_path):
    lab = lab_project(tmp_path, 1, 3)  # berlin-01 (canary), berlin-02, berlin-03
    yield lab
    lab.down()


def committed(lab, device):
    app = app_on(lab, device)
    return app and (app["committed"], app["current"])


@pytest.mark.timeout(600)  # each device holds a real runtime's gate: minutes on a loaded machine
def test_batches_with_a_canary_pause_resume_and_the_overlap_guard(lab, color_app, rtsp_server):
    camera = rtsp_server.url()
    first = work(lab, bundle(lab, color_app, "1.0.0"), camera)
    policy = Policy(batches=(1, "30%", "100%"), canary_tags=("canary",), concurrency=3,
                    pause_after_batch=True)
    paused = deploy(lab, first, policy, prestage=True)
    assert paused.status == "paused" and outcomes(paused)["berlin-01"] == "succeeded", paused
    # while the canary held its gate, the next batch's blobs went ahead, and only blobs:
    # nothing is staged there before its turn; the batch after it got nothing yet
    shas = sorted({f.sha256 for f in first.manifest.files})
    assert agent(lab, "berlin-02").blobs_have(shas).missing == ()
    assert app_on(lab, "berlin-02") is None
    assert agent(lab, "berlin-03").blobs_have(shas).missing == tuple(shas)
    # an unfinished deploy of these devices refuses a second one (the journal's guard)
    with pytest.raises(FleetError, match="already targets"):
        deploy(lab, first, Policy(batches=("100%",)))
    report = paused
    while report.status == "paused":
        report = engine.resume(lab.project, paused.id, nornir_for(lab.project, report.header),
                               first)
    assert report.status == "completed", report
    assert report.batches == [["berlin-01"], ["berlin-02"], ["berlin-03"]]
    assert {d: committed(lab, d) for d in ("berlin-01", "berlin-02", "berlin-03")} == \
        {d: ("1.0.0", "1.0.0") for d in ("berlin-01", "berlin-02", "berlin-03")}


@pytest.mark.timeout(600)
def test_code_only_update_then_a_crashing_canary_stops_the_rollout(lab, color_app,
                                                                    rtsp_server):
    camera = rtsp_server.url()
    first = work(lab, bundle(lab, color_app, "1.0.0"), camera)
    report = deploy(lab, first, Policy(batches=("100%",), concurrency=3))
    assert set(outcomes(report).values()) == {"succeeded"}, report

    # a code-only version: one blob of the size of the changed file travels, nothing else
    code = (color_app / CODE).read_text() + "\n# 1.1.0: a comment-only change\n"
    steps = Steps()
    second = work(lab, bundle(lab, color_app, "1.1.0", code=code), camera, steps)
    rows = plan(lab, second)
    assert {r["send_bytes"] for r in rows.values()} == {len(code.encode())}, rows
    assert {r["send_blobs"] for r in rows.values()} == {1}
    report = deploy(lab, second, Policy(batches=("100%",), concurrency=3))
    assert set(outcomes(report).values()) == {"succeeded"}, report
    assert all(steps.sent(d) == len(code.encode()) for d in rows)

    # a release whose code crashes: the canary's device rolls back by itself, the rollout stops
    broken = work(lab, bundle(lab, color_app, "2.0.0", code=crashing_code(color_app)), camera)
    report = deploy(lab, broken, Policy(batches=(1, "100%"), canary_tags=("canary",),
                                        max_fail_percentage=0))
    assert report.status == "stopped", report
    assert outcomes(report) == {"berlin-01": "failed", "berlin-02": "not-run",
                                "berlin-03": "not-run"}
    assert "rolled back by the device" in report.devices["berlin-01"].reason, report
    assert committed(lab, "berlin-01") == ("1.1.0", "1.1.0")
    assert app_on(lab, "berlin-01")["state"] == "rolled-back"
    assert committed(lab, "berlin-02") == ("1.1.0", "1.1.0")
    assert app_on(lab, "berlin-02")["running"] and app_on(lab, "berlin-03")["running"]

    # back to the previous version kept on the device, then removal; others untouched
    result = run_cli(lab.project.root, "app", "rollback", NAME, "-i", "lab", "--limit",
                     "berlin-02", "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["devices"][0]["version"] == "1.0.0"
    assert app_on(lab, "berlin-02")["current"] == "1.0.0"
    result = run_cli(lab.project.root, "app", "remove", NAME, "-i", "lab", "--limit",
                     "berlin-03", "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert app_on(lab, "berlin-03") is None
    assert committed(lab, "berlin-01") == ("1.1.0", "1.1.0")
    again = run_cli(lab.project.root, "app", "remove", NAME, "-i", "lab", "--limit",
                    "berlin-03", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["devices"][0]["state"] == "absent"
    status = run_cli(lab.project.root, "app", "status", report.id, "--json")
    assert status.exit_code == 0 and json.loads(status.stdout)["status"] == "stopped"
