"""The `fleet app` rollout commands with --json over a real lab: deploy, status, resume,
abort, retry (the very commands of `fleet ota`, found by the work kind in the journal),
plan, rollback and remove. Devices already at the version make it quick: each command
still goes through the engine, the journal and every device's decision."""

from __future__ import annotations

import json

import pytest
from appdeploy_kit import NAME, agent, app_on, bundle, deploy, outcomes, work
from fleet_runtime.apps import supervise
from lab_rollouts import lab_project
from labkit import run_cli

from fleet.rollout.policy import Policy


@pytest.fixture
def lab(tmp_path):
    lab = lab_project(tmp_path, 1, 2)  # berlin-01 (canary), berlin-02
    yield lab
    lab.down()


def cli(lab, *args, exits=(0,)):
    result = run_cli(lab.project.root, "app", *args, "--json")
    assert result.exit_code in exits, result.stdout + result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()] if args[0] in \
        ("deploy", "resume", "retry") else json.loads(result.stdout)


@pytest.mark.timeout(600)  # real runtimes' health gates: minutes on a loaded machine
def test_app_commands_answer_json(lab, color_app, rtsp_server):
    path = bundle(lab, color_app, "1.0.0")
    report = deploy(lab, work(lab, path, rtsp_server.url()), Policy(concurrency=2))
    assert set(outcomes(report).values()) == {"succeeded"}, report

    plan = cli(lab, "plan", str(path), "-i", "lab", "--batches", "1,100%")
    assert plan["batches"] == [["berlin-01"], ["berlin-02"]] and plan["blocked"] == []
    assert {d["state"] for d in plan["devices"]} == {"current"}

    events = cli(lab, "deploy", str(path), "-i", "lab", "--batches", "1,100%",
                 "--pause-after-batch")
    paused = events[-1]["report"]
    assert paused["status"] == "paused" and paused["header"]["kind"] == "app", paused
    assert cli(lab, "status")["status"] == "paused"
    done = cli(lab, "resume")[-1]["report"]
    assert done["status"] == "completed" and done["id"] == paused["id"]
    assert {d["outcome"] for d in done["devices"]} == {"unchanged"}, done

    cli(lab, "deploy", str(path), "-i", "lab", "--batches", "1,100%", "--pause-after-batch")
    assert cli(lab, "abort")["status"] == "aborted"
    retried = cli(lab, "retry", "--failed")[-1]["report"]
    assert retried["status"] == "completed", retried

    # additive: a second application leaves the first running, not even restarted
    first = supervise.read_record(lab.layout("berlin-01"), NAME)
    other = bundle(lab, color_app, "1.0.0", name="color_two")
    report = deploy(lab, work(lab, other, rtsp_server.url()), Policy(), limit="berlin-01")
    assert outcomes(report) == {"berlin-01": "succeeded"}, report
    now = supervise.read_record(lab.layout("berlin-01"), NAME)
    assert first and now and (now["pid"], now["child"]) == (first["pid"], first["child"])
    assert app_on(lab, "berlin-01")["state"] == "done"

    back = cli(lab, "rollback", NAME, "-i", "lab", exits=(1,))  # only one version kept
    assert back["failed"] == ["berlin-01", "berlin-02"] and "no-previous" in \
        back["devices"][0]["reason"], back
    gone = cli(lab, "remove", NAME, "-i", "lab")
    assert {d["state"] for d in gone["devices"]} == {"removed"}
    kept = agent(lab, "berlin-01").app_list().get("color_two")
    assert kept is not None and (kept.state, kept.committed, kept.running) == \
        ("done", "1.0.0", True)
    assert run_cli(lab.project.root, "app", "remove", "../etc", "-i", "lab").exit_code == 2
