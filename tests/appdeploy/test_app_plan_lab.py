"""`fleet app plan` on a real lab: the decision the deploy acts on, and its refusals before
any byte moves (too little disk, another platform)."""

from __future__ import annotations

import json

import pytest
from appdeploy_kit import NAME, Steps, agent, app_on, bundle, deploy, outcomes, plan, work
from lab_rollouts import lab_project
from labkit import run_cli

from fleet import inventory as inv
from fleet.apps.work import AppWork
from fleet.rollout.policy import Policy


@pytest.fixture
def lab(tmp_path):
    lab = lab_project(tmp_path, 1, 3)  # berlin-01 (canary), berlin-02, berlin-03
    yield lab
    lab.down()


def model_blob(w):
    entry = max(w.manifest.files, key=lambda f: f.size)  # the ONNX model
    return entry, w.source.path(entry.sha256).read_bytes()


@pytest.mark.timeout(600)  # real runtimes' health gates: minutes on a loaded machine
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
    # a dry run of the deploy task decides, then stops: nothing reaches the device
    nr = inv.select(lab.project, inv.Selection.of("lab", limit="berlin-02"))
    dry = nr.run(task=AppWork.for_bundle(lab.project, path).deploy, dry_run=True)["berlin-02"]
    assert not dry.failed and dry[0].result["state"] == "planned", dry[0].result
    assert app_on(lab, "berlin-02") is None
    bad = run_cli(lab.project.root, "app", "deploy", str(path), "-i", "lab", "--window", "-1")
    assert bad.exit_code == 2 and "--window -1 is not a number >= 0" in bad.stderr, bad


@pytest.fixture
def pair(tmp_path):
    lab = lab_project(tmp_path, 1, 2)  # berlin-01, berlin-02
    yield lab
    lab.down()


def _register_cameras(lab, rtsp_server):
    """berlin-01: the server's password-protected mount; berlin-02: a wrong path and a
    dead port. All tagged role=entrance, which the plan binds with `-e`."""
    import socket
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "play"))
    from opkit import call

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    user, secret = rtsp_server.username, rtsp_server.password
    csv = lab.project.root / "cameras.csv"
    csv.write_text("name,device,rtsp_url,username,password,description,tags\n"
                   f"cam-ok,berlin-01,{rtsp_server.url('secure')},{user},{secret},,role=entrance\n"
                   f"cam-path,berlin-02,{rtsp_server.url('nosuch')},,,,role=entrance\n"
                   f"cam-port,berlin-02,rtsp://127.0.0.1:{dead_port}/test,,,,role=entrance\n")
    for device in ("berlin-01", "berlin-02"):
        assert not call(lab, "devices.register", device, contact=False).failed
    assert not call(lab, "cameras.import", None, csv=str(csv)).failed
    return secret


@pytest.mark.timeout(600)
def test_plan_probes_bound_cameras_from_the_device_and_refuses_unreachable(pair, color_app,
                                                                          rtsp_server):
    lab = pair
    secret = _register_cameras(lab, rtsp_server)
    path = bundle(lab, color_app, "1.0.0")
    bind = ("-e", "camera_node=tag:role=entrance")

    result = run_cli(lab.project.root, "app", "plan", str(path), "-i", "lab", *bind, "--json")
    assert result.exit_code == 1, result.stdout + result.stderr
    rows = {d["name"]: d for d in json.loads(result.stdout)["devices"]}
    assert rows["berlin-01"]["state"] == "change", rows["berlin-01"]
    assert rows["berlin-01"]["cameras"] == [
        {"name": "cam-ok", "status": "REACHABLE", "reachable": True}]
    assert rows["berlin-02"]["state"] == "refused"
    assert rows["berlin-02"]["reason"].startswith(
        "camera-unreachable: cam-path (NOT_FOUND), cam-port (UNREACHABLE)"), rows["berlin-02"]
    assert [c["reachable"] for c in rows["berlin-02"]["cameras"]] == [False, False]
    for text in (secret, "rtsp://", str(rtsp_server.port)):  # names and status only
        assert text not in result.stdout + result.stderr, text

    # the table shows the same; --allow-unreachable plans the change anyway
    table = run_cli(lab.project.root, "app", "plan", str(path), "-i", "lab", *bind,
                    "--allow-unreachable")
    assert table.exit_code == 0, table.stdout + table.stderr
    assert "cam-ok reachable" in table.stdout and "cam-port unreachable" in table.stdout
    assert secret not in table.stdout + table.stderr

    # deploy runs the same decision: refused before any byte moves
    refused = run_cli(lab.project.root, "app", "deploy", str(path), "-i", "lab", *bind,
                      "--limit", "berlin-02", "--json")
    assert refused.exit_code == 1, refused.stdout + refused.stderr
    reason = json.loads(refused.stdout)["refused"][0]["reason"]
    assert reason.startswith("camera-unreachable: cam-path"), reason
    assert app_on(lab, "berlin-02") is None


@pytest.mark.timeout(600)
def test_plan_for_iot_jobs_refuses_registry_camera_bindings(pair, color_app, rtsp_server):
    """One shared job document cannot carry a device's sealed camera credentials: plan and
    deploy with --engine iot-jobs refuse the device (over ssh it would be a change); without
    per-device configuration the plan is the same as over ssh."""
    lab = pair
    _register_cameras(lab, rtsp_server)
    path = bundle(lab, color_app, "1.0.0")
    bind = ("-e", "camera_node=tag:role=entrance", "--limit", "berlin-01")

    result = run_cli(lab.project.root, "app", "plan", str(path), "-i", "lab", *bind,
                     "--engine", "iot-jobs", "--json")
    assert result.exit_code == 1, result.stdout + result.stderr
    row = json.loads(result.stdout)["devices"][0]
    assert (row["name"], row["state"]) == ("berlin-01", "refused"), row
    assert row["reason"] == ("per-device-config: iot-jobs cannot carry berlin-01's camera "
                             "bindings (camera_node); deploy over ssh")
    over_ssh = run_cli(lab.project.root, "app", "plan", str(path), "-i", "lab", *bind, "--json")
    assert json.loads(over_ssh.stdout)["devices"][0]["state"] == "change", over_ssh.stdout

    refused = run_cli(lab.project.root, "app", "deploy", str(path), "-i", "lab", *bind,
                      "--engine", "iot-jobs", "--json")
    assert refused.exit_code == 1, refused.stdout + refused.stderr
    assert json.loads(refused.stdout)["refused"][0]["reason"].startswith("per-device-config:")
    assert app_on(lab, "berlin-01") is None

    # without per-device configuration the job can carry it: the same plan as over ssh
    plans = [[(d["name"], d["state"], d["reason"]) for d in json.loads(run_cli(
        lab.project.root, "app", "plan", str(path), "-i", "lab", *engine, "--json").stdout)[
        "devices"]] for engine in ((), ("--engine", "iot-jobs"))]
    assert plans[0] == plans[1] and {state for _, state, _ in plans[1]} == {"change"}, plans
