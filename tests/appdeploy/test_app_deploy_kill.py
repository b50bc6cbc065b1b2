"""SIGKILL of the controller during a deploy, then `resume`: every device ends committed on
the target, and a device the dead controller had already staged is not staged again.

The kill lands at the start of a step chosen at random among the ones the deploy goes
through (3 devices x 7 steps); EDGEFLEET_APP_KILL_SEED sets the seed (printed). Helper
A3's 30-device test kills at random moments many times; this is the small seeded one.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from appdeploy_kit import app_on, bundle, crashing_code
from device_apps import wait_for
from lab_rollouts import lab_project

from fleet.facts import APP_STAGED
from fleet.rollout.journal import Journal

PROC = Path(__file__).with_name("deploy_proc.py")
DEVICES = ("berlin-01", "berlin-02", "berlin-03")


@pytest.fixture
def lab(tmp_path):
    lab = lab_project(tmp_path, 1, 3)
    yield lab
    lab.down()


def controller(lab, camera, *args):
    return subprocess.Popen([sys.executable, str(PROC), str(lab.project.root), camera, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.timeout(600)  # real runtimes' health gates: minutes on a loaded machine
def test_resume_after_the_controller_is_killed_stages_nothing_twice(lab, color_app,
                                                                     rtsp_server):
    seed = int(os.environ.get("EDGEFLEET_APP_KILL_SEED") or random.randrange(1 << 30))
    print(f"EDGEFLEET_APP_KILL_SEED={seed}")
    kill_at = random.Random(seed).randint(1, 3 * 7)
    path = bundle(lab, color_app, "1.0.0")
    proc = controller(lab, rtsp_server.url(), "start", str(path))
    starts = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        doc = json.loads(line)
        starts += doc.get("status") == "start"
        if starts == kill_at:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(300)
    staged_before = {d: (a := app_on(lab, d)) is not None and a["target"] == "1.0.0" and
                     a["state"] in (*APP_STAGED, "done") for d in DEVICES}
    journal = Journal.open(lab.project, None)
    before = len(journal.events())

    resumed = controller(lab, rtsp_server.url(), "resume")
    out, err = resumed.communicate(timeout=600)
    if proc.returncode != -signal.SIGKILL:  # it finished before the chosen step: no resume
        assert "nothing to resume" in err, err
    else:
        assert resumed.returncode == 0, err[-2000:]
        assert json.loads(out.splitlines()[-1])["report"]["status"] == "completed", out
    for device in DEVICES:
        app = app_on(lab, device)
        assert app is not None and (app["committed"], app["state"]) == ("1.0.0", "done"), app
    after = journal.events()[before:]
    for device in DEVICES:
        restaged = [e for e in after if e.get("event") == "device_step" and
                    e.get("device") == device and e.get("step") == "staged"]
        if staged_before[device]:
            assert not restaged, f"{device} was staged before the kill and again after"


@pytest.mark.timeout(600)  # real runtimes' health gates: minutes on a loaded machine
def test_a_canary_that_rolled_back_while_the_controller_was_down_is_not_deployed_again(
        lab, color_app, rtsp_server):
    path = bundle(lab, color_app, "2.0.0", code=crashing_code(color_app))
    proc = controller(lab, rtsp_server.url(), "start", str(path))
    assert proc.stdout is not None
    for line in proc.stdout:  # the canary's gate has begun: the controller dies
        doc = json.loads(line)
        if (doc["device"], doc["step"], doc.get("status")) == ("berlin-01", "health_check",
                                                               "start"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(60)
    wait_for("the canary's own verdict", lambda: (app_on(lab, "berlin-01") or {}).get(
        "state") == "rolled-back", timeout=300)
    journal = Journal.open(lab.project, None)
    before = len(journal.events())

    resumed = controller(lab, rtsp_server.url(), "resume")
    out, err = resumed.communicate(timeout=600)
    report = json.loads(out.splitlines()[-1])["report"]
    canary = next(d for d in report["devices"] if d["name"] == "berlin-01")
    assert canary["outcome"] == "failed" and "while the controller was down" in \
        canary["reason"], canary
    assert report["status"] == "stopped", report
    assert not [e for e in journal.events()[before:] if e.get("event") == "device_step"
                and e.get("device") == "berlin-01" and e.get("step") == "staged"]
    assert app_on(lab, "berlin-02") is None and app_on(lab, "berlin-03") is None
