"""`fleet app plan` on a real lab: the decision the deploy acts on, and its refusals before
any byte moves (too little disk, another platform)."""

from __future__ import annotations

import json

import pytest
from appdeploy_kit import NAME, Steps, agent, app_on, bundle, deploy, outcomes, plan, work
from lab_rollouts import lab_project
from labkit import run_cli

from fleet.rollout.policy import Policy


@pytest.fixture
def lab(tmp_path):
    lab = lab_project(tmp_path, 1, 3)  # berlin-01 (canary), berlin-02, berlin-03
    yield lab
    lab.down()


def model_blob(w):
    entry = max(w.manifest.files, key=lambda f: f.size)  # the ONNX model
    return entry, w.source.path(entry.sha256).read_bytes()


def test_plan_equals_apply_and_refusals_send_nothing(lab, color_app, rtsp_server):
    path = bundle(lab, color_app, "1.0.0")
    steps = Steps()
    w = work(lab, path, rtsp_server.url(), steps)
    total = sum(f.size for f in {f.sha256: f for f in w.manifest.files}.values())
    # berlin-02 already holds the first half of the model (an interrupted transfer)
    entry, data = model_blob(w)
    code = agent(lab, "berlin-02").answer("blobs", "put", entry.sha256, "--size",
                                          str(entry.size), stdin=data[:entry.size // 2])
    assert code["ok"] is False and code["error"]["code"] == "short", code
    lab.fault("berlin-03", "disk-full")

    rows = plan(lab, w)
    assert rows["berlin-01"]["state"] == "change" and rows["berlin-01"]["send_bytes"] == total
    assert rows["berlin-02"]["send_bytes"] == total - entry.size // 2, rows["berlin-02"]
    assert rows["berlin-03"]["state"] == "refused", rows["berlin-03"]
    assert "too little disk" in rows["berlin-03"]["reason"]
    assert rows["berlin-01"]["platform"] == "linux-arm64-v8"

    # the deploy runs the same decision and refuses to start: nothing reaches any device
    result = run_cli(lab.project.root, "app", "deploy", str(path), "-i", "lab", "--json")
    assert result.exit_code == 1, result.stdout + result.stderr
    assert json.loads(result.stdout)["refused"][0]["name"] == "berlin-03"
    assert agent(lab, "berlin-01").blobs_have([entry.sha256]).missing == (entry.sha256,)
    assert app_on(lab, "berlin-01") is None

    report = deploy(lab, w, Policy(batches=(1, "100%")), limit="berlin-01,berlin-02")
    assert outcomes(report) == {"berlin-01": "succeeded", "berlin-02": "succeeded"}, report
    for device in ("berlin-01", "berlin-02"):
        assert steps.sent(device) == rows[device]["send_bytes"], device  # plan == apply
        app = app_on(lab, device)
        assert app is not None and app["committed"] == "1.0.0" and app["state"] == "done"
    assert app_on(lab, "berlin-03") is None
    again = plan(lab, w, limit="berlin-01,berlin-02")
    assert {r["state"] for r in again.values()} == {"current"}


def test_plan_refuses_a_bundle_for_another_platform(lab, color_app):
    helper = "packages/123456789012-COLOR_CODE-1.0/src/native/libhelper-linux-amd64.so"
    path = bundle(lab, color_app, "1.0.0", extra={helper: b"\x7fELF amd64 only"})
    device_json = lab.root("berlin-02") / "etc/fleet/device.json"
    doc = json.loads(device_json.read_text())
    device_json.write_text(json.dumps({**doc, "arch": "x86_64"}))

    result = run_cli(lab.project.root, "app", "plan", str(path), "-i", "lab", "--json")
    assert result.exit_code == 1, result.stdout + result.stderr
    rows = {d["name"]: d for d in json.loads(result.stdout)["devices"]}
    assert rows["berlin-02"]["state"] == "change" and rows["berlin-02"]["platform"] == "linux-amd64"
    for name in ("berlin-01", "berlin-03"):
        assert rows[name]["state"] == "refused"
        assert "linux-amd64, not linux-arm64-v8" in rows[name]["reason"], rows[name]
    assert isinstance(rows["berlin-02"]["send_bytes"], int) and rows["berlin-02"]["send_bytes"] > 0
    text = run_cli(lab.project.root, "app", "plan", str(path), "-i", "lab")
    assert text.exit_code == 1 and "berlin-01: refused:" in text.stdout, text.stdout
    assert NAME not in {a for a in agent(lab, "berlin-01").app_list().apps}
