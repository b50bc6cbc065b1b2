"""The built-in operations against the lab (real sshd, real agent, real reboots), called
directly with an OpContext: check mode changes nothing on the device and predicts what
the real run then changes."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from labkit import CALM_HEALTH, start_lab
from opkit import call, device_hash

from fleet import firmware
from fleet.lab import Lab
from fleet.project import Project
from fleet.registry import open_registry

REPO = Path(__file__).resolve().parents[2]
SECRET = "correct-horse-battery"


@pytest.fixture(scope="module")
def op_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("ops")
    (root / "fleet.yaml").write_text(CALM_HEALTH)
    shutil.copytree(REPO / "firmware", root / "firmware")
    firmware.keygen(Project.locate(root), passphrase=SECRET.encode())
    lab = start_lab(root, 1, 3)
    yield lab
    lab.down()


@pytest.fixture(scope="module")
def bundle(op_lab: Lab) -> Path:
    recipe = op_lab.project.firmware / "lab-1.1.0.yaml"
    return firmware.build(op_lab.project, recipe, passphrase=SECRET.encode()).path


def test_ota_install_check_changes_nothing_and_predicts_the_real_run(op_lab, bundle):
    device = "berlin-01"
    before = device_hash(op_lab, device)
    predicted = call(op_lab, "ota.install", device, check=True, bundle=str(bundle))
    assert device_hash(op_lab, device) == before
    assert predicted.changed and not predicted.failed and predicted.predicted
    assert predicted.diff == {"software": {"before": "1.0.0", "after": "1.1.0"}}

    steps: list[str] = []
    done = call(op_lab, "ota.install", device, steps=steps, bundle=str(bundle))
    assert done.changed and not done.failed, done.msg
    assert done.diff == predicted.diff
    assert "ota.verify" in steps and "ota.commit" in steps
    assert device_hash(op_lab, device) != before

    again = call(op_lab, "ota.install", device, check=True, bundle=str(bundle))
    assert (again.changed, again.diff) == (False, None)
    assert not call(op_lab, "ota.install", device, bundle=str(bundle)).changed


def test_ota_install_refusal_is_a_failed_device_in_both_modes(op_lab):
    recipe = op_lab.project.firmware / "lab-1.1.0.yaml"
    other = op_lab.project.firmware / "other-hardware.yaml"
    other.write_text(recipe.read_text().replace(
        "hardware: [jetson-xavier-nx, jetson-orin-nano, jetson-orin-agx]",
        "hardware: [raspberry-pi-5]"))
    wrong = firmware.build(op_lab.project, other, passphrase=SECRET.encode()).path
    before = device_hash(op_lab, "berlin-03")
    for check in (True, False):
        out = call(op_lab, "ota.install", "berlin-03", check=check, bundle=str(wrong))
        assert out.failed and not out.changed and "wrong-hardware" in out.msg, out
        assert out.diff is None
    assert device_hash(op_lab, "berlin-03") == before


def test_health_check_passes_a_healthy_device_and_asserts_thresholds(op_lab):
    ok = call(op_lab, "health.check", "berlin-02")
    assert not ok.failed and not ok.changed, ok.msg
    assert ok.data["verdict"] == "healthy" and ok.data["checks"]["disk"] == "ok"
    tight = call(op_lab, "health.check", "berlin-02", max_disk_pct=0.0)
    assert tight.failed and "disk" in tight.msg and "above 0.0%" in tight.msg
    app = call(op_lab, "health.check", "berlin-02", apps_running=["face-blur"])
    assert app.failed and "face-blur is not installed" in app.msg


def test_health_check_fails_an_unreachable_device(op_lab):
    op_lab.stop("berlin-03")
    try:
        out = call(op_lab, "health.check", "berlin-03")
        assert out.failed and out.data["verdict"] == "unreachable"
    finally:
        op_lab.start("berlin-03")


def test_reboot_check_predicts_the_boot_counter_then_wait_for_sees_it_back(op_lab):
    device = "berlin-02"
    before = device_hash(op_lab, device)
    predicted = call(op_lab, "agent.reboot", device, check=True)
    assert device_hash(op_lab, device) == before
    done = call(op_lab, "agent.reboot", device, timeout=120.0)
    assert not done.failed, done.msg
    assert done.diff == predicted.diff
    assert done.diff["boots"]["after"] == done.diff["boots"]["before"] + 1
    back = call(op_lab, "wait_for", device, timeout=60.0)
    assert not back.failed and back.data["verdict"] == "healthy", back.msg


def test_wait_for_gives_up_on_a_device_that_stays_away(op_lab):
    op_lab.stop("berlin-03")
    try:
        out = call(op_lab, "wait_for", "berlin-03", timeout=1.0, poll=0.5)
        assert out.failed and "not back within 1s" in out.msg
        looked = call(op_lab, "wait_for", "berlin-03", check=True, timeout=1.0)
        assert not looked.failed and "did not wait" in looked.msg
    finally:
        op_lab.start("berlin-03")


def test_logs_export_check_writes_nothing_then_the_real_run_stores_a_bundle(op_lab):
    out = op_lab.project.root / "exported"
    predicted = call(op_lab, "logs.export", "berlin-01", check=True, out=str(out))
    assert predicted.changed and not out.exists()
    done = call(op_lab, "logs.export", "berlin-01", out=str(out))
    assert not done.failed, done.msg
    assert Path(done.data["path"]).is_file() and Path(done.data["path"]).is_relative_to(out)
    assert predicted.diff == {"bundle": {"before": None, "after": str(out)}}


def test_register_check_names_the_fields_then_registers_exactly_them(op_lab):
    predicted = call(op_lab, "devices.register", "berlin-01", check=True)
    assert predicted.changed and predicted.diff["registered"] == {"before": False, "after": True}
    with open_registry(op_lab.project) as reg:
        assert reg.get_device("berlin-01") is None
    done = call(op_lab, "devices.register", "berlin-01")
    assert done.changed and done.diff == predicted.diff
    assert done.data["status"] and done.data["software"]
    with open_registry(op_lab.project) as reg:
        record = reg.get_device("berlin-01")
    assert record is not None and record["site"] == predicted.diff["site"]["after"]
    assert not call(op_lab, "devices.register", "berlin-01", check=True).changed


def test_cameras_import_check_is_the_importers_dry_run(op_lab, monkeypatch):
    monkeypatch.setenv("LAB_CAMERA_PASSWORD", "lab-pass-1234")
    for device in ("berlin-01", "berlin-02", "berlin-03"):
        call(op_lab, "devices.register", device, contact=False)
    csv = "inventories/lab/cameras.csv"
    predicted = call(op_lab, "cameras.import", None, check=True, csv=csv)
    assert predicted.changed and len(predicted.diff["created"]["after"]) == 6
    with open_registry(op_lab.project) as reg:
        assert reg.list_cameras() == []
    done = call(op_lab, "cameras.import", None, csv=csv)
    assert done.changed and done.diff == predicted.diff
    assert "lab-pass-1234" not in repr(done)
    assert not call(op_lab, "cameras.import", None, check=True, csv=csv).changed

    bad = op_lab.project.root / "bad.csv"
    bad.write_text("name,device\nx,nowhere\n")
    refused = call(op_lab, "cameras.import", None, csv=str(bad))
    assert refused.failed and "bad.csv:" in refused.msg


def test_cameras_probe_check_shows_status_changes_without_recording(op_lab, monkeypatch):
    monkeypatch.setenv("LAB_CAMERA_PASSWORD", "lab-pass-1234")
    call(op_lab, "devices.register", "berlin-02", contact=False)
    call(op_lab, "cameras.import", None, csv="inventories/lab/cameras.csv",
         on_conflict="skip")
    with open_registry(op_lab.project) as reg:
        before = {c["name"]: c["status"] for c in reg.list_cameras(devices=["berlin-02"])}
    # No RTSP server answers on the lab's camera port: every camera is unreachable.
    predicted = call(op_lab, "cameras.probe", "berlin-02", check=True, via="controller",
                     timeout=1.0)
    with open_registry(op_lab.project) as reg:
        assert {c["name"]: c["status"] for c in reg.list_cameras(devices=["berlin-02"])} == before
    assert predicted.failed and set(predicted.data["cameras"]) == set(before)
    done = call(op_lab, "cameras.probe", "berlin-02", via="controller", timeout=1.0)
    assert done.diff == predicted.diff
    assert "lab-pass-1234" not in repr(done)
    with open_registry(op_lab.project) as reg:
        after = {c["name"]: c["status"] for c in reg.list_cameras(devices=["berlin-02"])}
    assert after == {k: v["after"] for k, v in
                     ((n.removeprefix("camera "), d) for n, d in done.diff.items())}
