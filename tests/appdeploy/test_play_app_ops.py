"""app.deploy and app.remove, the playbook operations, called directly for a lab device:
check mode changes nothing on the device and predicts the change the real run makes.
(Here beside the deployment tests for their colour app and RTSP server fixtures.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from appdeploy_kit import HEALTH, NAME, app_on, bundle
from lab_rollouts import lab_project

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "play"))
from opkit import call, device_hash  # noqa: E402

DEVICE = "berlin-01"


@pytest.fixture
def lab(tmp_path):
    lab = lab_project(tmp_path, 1, 1)
    yield lab
    lab.down()


def test_deploy_and_remove_check_mode_predicts_the_real_run(lab, color_app, rtsp_server):
    path = bundle(lab, color_app, "1.0.0")
    csv = lab.project.root / "cameras.csv"
    csv.write_text("name,device,rtsp_url,username,password,description,tags\n"
                   f"{DEVICE}-cam1,{DEVICE},{rtsp_server.url('test')},,,test pattern,\n")
    assert not call(lab, "devices.register", DEVICE, contact=False).failed
    assert not call(lab, "cameras.import", None, csv=str(csv)).failed
    args = {"bundle": str(path), "sets": [f"camera_node={DEVICE}-cam1"], "health": HEALTH}

    before = device_hash(lab, DEVICE)
    predicted = call(lab, "app.deploy", DEVICE, check=True, **args)
    assert device_hash(lab, DEVICE) == before and app_on(lab, DEVICE) is None
    assert predicted.changed and predicted.diff == {f"app {NAME}": {"before": None,
                                                                    "after": "1.0.0"}}
    done = call(lab, "app.deploy", DEVICE, **args)
    assert not done.failed, done.msg
    assert done.diff == predicted.diff
    assert app_on(lab, DEVICE)["committed"] == "1.0.0"
    assert not call(lab, "app.deploy", DEVICE, check=True, **args).changed

    would = call(lab, "app.remove", DEVICE, check=True, app=NAME)
    assert would.changed and app_on(lab, DEVICE) is not None
    removed = call(lab, "app.remove", DEVICE, app=NAME)
    assert removed.diff == would.diff and app_on(lab, DEVICE) is None
    assert not call(lab, "app.remove", DEVICE, check=True, app=NAME).changed
