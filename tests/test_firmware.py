"""fleet firmware: release keys at rest, recipes -> signed bundles, inspect/verify/list."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
from fleet_runtime import bundle, slots
from labkit import run_cli

from fleet import firmware
from fleet.errors import ConfigError, FleetError, UsageError
from fleet.project import Project

REPO = Path(__file__).resolve().parents[1]
PASS = {"FLEET_RELEASE_PASSPHRASE": "correct-horse-battery"}


@pytest.fixture
def fw_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    shutil.copytree(REPO / "firmware", tmp_path / "firmware")
    monkeypatch.setenv("FLEET_RELEASE_PASSPHRASE", PASS["FLEET_RELEASE_PASSPHRASE"])
    return Project.locate(tmp_path)


def test_keygen_encrypts_the_private_key_at_rest(fw_project):
    res = run_cli(fw_project.root, "firmware", "keygen", "--json", env=PASS)
    assert res.exit_code == 0, res.stderr
    info = json.loads(res.stdout)
    private = Path(info["private"])
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in private.read_bytes()
    assert PASS["FLEET_RELEASE_PASSPHRASE"] not in res.stdout + res.stderr
    pub = bundle.load_public_key(Path(info["public"]).read_bytes())
    assert bundle.key_id(pub) == info["key_id"]
    again = run_cli(fw_project.root, "firmware", "keygen", env=PASS)
    assert again.exit_code == 2 and "already exists" in again.stderr


def test_keygen_refuses_a_short_or_missing_passphrase(fw_project, monkeypatch):
    with pytest.raises(UsageError, match="at least"):
        firmware.keygen(fw_project, passphrase=b"short")
    with pytest.raises(UsageError, match="FLEET_RELEASE_PASSPHRASE"):
        firmware.keygen(fw_project, passphrase=None)


def test_wrong_passphrase_is_one_clear_error(fw_project):
    firmware.keygen(fw_project, passphrase=b"correct-horse-battery")
    res = run_cli(fw_project.root, "firmware", "build", "firmware/lab-1.1.0.yaml",
                  env={"FLEET_RELEASE_PASSPHRASE": "wrong-passphrase"})
    assert res.exit_code == 1
    assert "wrong passphrase for release key 'release'" in res.stderr
    assert "Traceback" not in res.stderr


def test_build_inspect_verify_list(fw_project):
    firmware.keygen(fw_project, passphrase=b"correct-horse-battery")
    res = run_cli(fw_project.root, "firmware", "build", "firmware/lab-1.1.0.yaml", "--json",
                  env=PASS)
    assert res.exit_code == 0, res.stderr
    built = json.loads(res.stdout)
    paths = {f["path"]: f for f in built["files"]}
    assert {"opt/edgefleet/VERSION", "opt/edgefleet/models/detector.onnx", "etc/os-release",
            "opt/edgefleet/bin/selftest"} <= set(paths)
    assert paths["opt/edgefleet/bin/selftest"]["mode"] == 0o755
    assert built["hooks"] == {"selftest": "opt/edgefleet/bin/selftest"}
    path = Path(built["path"])
    assert firmware.target_version(path) == "1.1.0"
    inspected = json.loads(run_cli(fw_project.root, "firmware", "inspect", str(path),
                                   "--json").stdout)
    assert inspected["version"] == "1.1.0" and inspected["arch"] == ["aarch64"]
    res = run_cli(fw_project.root, "firmware", "verify", str(path))
    assert res.exit_code == 0 and "verified" in res.stderr
    listed = json.loads(run_cli(fw_project.root, "firmware", "list", "--json").stdout)
    versions = {(r["version"], bool(r["bundle"])) for r in listed["bundles"]}
    assert ("1.1.0", True) in versions and ("1.2.0", False) in versions
    # the image's VERSION file says what the bundle says
    dest = fw_project.root / "unpacked"
    with open(path, "rb") as fh:
        bundle.read_bundle(fh, firmware.keyring(fw_project), bundle.DirectorySink(dest))
    assert (dest / "opt/edgefleet/VERSION").read_text() == "1.1.0\n"


def test_verify_refuses_a_tampered_bundle(fw_project):
    firmware.keygen(fw_project, passphrase=b"correct-horse-battery")
    built = firmware.build(fw_project, fw_project.firmware / "lab-1.1.0.yaml",
                           passphrase=b"correct-horse-battery")
    data = bytearray(built.path.read_bytes())
    data[data.index(b"threshold")] ^= 1
    built.path.write_bytes(bytes(data))
    res = run_cli(fw_project.root, "firmware", "verify", str(built.path))
    assert res.exit_code == 1 and "hash-mismatch" in res.stderr


def test_verify_refuses_a_bundle_signed_by_a_foreign_key(fw_project, tmp_path):
    firmware.keygen(fw_project, "old", passphrase=b"correct-horse-battery")
    built = firmware.build(fw_project, fw_project.firmware / "lab-1.1.0.yaml",
                           passphrase=b"correct-horse-battery", key_name="old")
    (fw_project.certs / "release/old.pub").unlink()
    firmware.keygen(fw_project, "new", passphrase=b"correct-horse-battery")
    with pytest.raises(FleetError, match="untrusted-key"):
        firmware.verify(fw_project, built.path)


def test_recipe_errors_name_the_file_and_line(fw_project):
    firmware.keygen(fw_project, passphrase=b"correct-horse-battery")
    bad = fw_project.firmware / "bad.yaml"
    bad.write_text("name: x\nversion: one\nhardware: [a]\narch: aarch64\npayload: lab-image\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:2: \$.version"):
        firmware.build(fw_project, bad, passphrase=b"correct-horse-battery")
    bad.write_text("name: x\nversion: '1.0'\nhardware: [a]\narch: aarch64\nfiles:\n"
                   "  ../escape: lab-image/opt/edgefleet/runtime/runtime.yaml\n")
    with pytest.raises(ConfigError, match="refusing path"):
        firmware.build(fw_project, bad, passphrase=b"correct-horse-battery")


def test_key_rotation_bundle_ships_the_new_key(fw_project, tmp_path):
    """Signed by the old key, adds the new: after commit the device trusts bundles by the new."""
    secret = b"correct-horse-battery"
    old = firmware.keygen(fw_project, "old", passphrase=secret)
    new = firmware.keygen(fw_project, "new", passphrase=secret)
    recipe = fw_project.firmware / "rotate.yaml"
    recipe.write_text((fw_project.firmware / "lab-1.1.0.yaml").read_text()
                      + "key: old\nadd_keys: [new]\n")
    rotate = firmware.build(fw_project, recipe, passphrase=secret)
    from fixtures_bundle import make_device

    device = make_device(tmp_path / "dev")
    device.release_keys.mkdir(parents=True, exist_ok=True)
    shutil.copy(old.public, device.release_keys / "old.pub")
    with open(rotate.path, "rb") as fh:
        slots.install(device, fh)
    slots.activate(device)
    slots.boot(device)
    slots.commit(device)
    assert (device.release_keys / f"{new.key_id}.pub").exists()
    later = fw_project.firmware / "later.yaml"
    later.write_text((fw_project.firmware / "lab-1.1.0.yaml").read_text()
                     .replace("version: 1.1.0", "version: 1.3.0") + "key: new\n")
    with open(firmware.build(fw_project, later, passphrase=secret).path, "rb") as fh:
        assert slots.install(device, fh)["version"] == "1.3.0"


def test_keygen_can_trust_the_key_on_existing_lab_devices(fw_project):
    dev = fw_project.state_dir / "lab/devices/berlin-01"
    (dev / "etc/fleet").mkdir(parents=True)
    (dev / "etc/fleet/device.json").write_text("{}")
    res = run_cli(fw_project.root, "firmware", "keygen", "--install-lab", "--json", env=PASS)
    assert json.loads(res.stdout)["installed_on"] == ["berlin-01"]
    assert (dev / "etc/fleet/release-keys/release.pub").exists()


def test_inspect_of_garbage_is_one_line(fw_project):
    junk = fw_project.root / "junk.bundle"
    junk.write_bytes(b"not a bundle" * 100)
    res = run_cli(fw_project.root, "firmware", "inspect", str(junk))
    assert res.exit_code == 1 and res.stderr.count("\n") <= 3 and "bundle refused" in res.stderr
    assert run_cli(fw_project.root, "firmware", "inspect", "nope.bundle").exit_code == 2
