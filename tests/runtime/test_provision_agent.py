"""`fleet-agent provision --usb` and `fleet-agent reset` on a factory-fresh device root.

Archives are built by the real controller code with a real CA; the agent runs
in-process through its own CLI entry point (the lab test in tests/test_provisioning.py
runs it as a subprocess behind a real sshd).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for fixtures_provisioning

from fixtures_provisioning import (  # noqa: E402
    Factory,
    make_factory,
    members_of,
    resign,
    write_zip,
)
from fleet_runtime import provisioning as fmt  # noqa: E402
from fleet_runtime.agent import cli  # noqa: E402
from fleet_runtime.agent import provision as agent_provision  # noqa: E402
from fleet_runtime.layout import Layout, atomic_write_json  # noqa: E402


@pytest.fixture
def factory(tmp_path: Path) -> Factory:
    """A throwaway project with a fresh fleet CA that builds real archives."""
    return make_factory(tmp_path / "project")


@pytest.fixture
def device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Layout:
    """A factory-fresh device: software, no identity; hardware serial SN-0001."""
    layout = Layout(tmp_path / "device")
    layout.etc.mkdir(parents=True)
    atomic_write_json(layout.root / ".lab/hardware.json", {"serial": "SN-0001"})
    monkeypatch.setenv("FLEET_ROOT", str(layout.root))
    return layout


@pytest.fixture
def drive(tmp_path: Path) -> Path:
    path = tmp_path / "usb"
    path.mkdir()
    return path


def agent(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    rc = cli.main(list(args))
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == (0 if answer["ok"] else 1)
    return dict(answer)


def tree(layout: Layout) -> dict[str, bytes]:
    """Every file of the device except its own logs (the agent logs each command)."""
    return {
        p.relative_to(layout.root).as_posix(): p.read_bytes()
        for p in sorted(layout.root.rglob("*"))
        if p.is_file() and not p.is_relative_to(layout.logs)
    }


def log_of(drive: Path) -> str:
    return (drive / "edgefleet/provision.log").read_text()


def pin(device: Layout, text: str) -> Path:
    """Write the device's manufacturing trust anchor with exactly `text`."""
    anchor = fmt.trust_anchor_path(device)
    anchor.parent.mkdir(parents=True, exist_ok=True)
    anchor.write_text(text)
    return anchor


def test_first_boot_installs_identity(
    factory: Factory, device: Layout, drive: Path, capsys
) -> None:
    built = factory.build(
        network={
            "eth0": {"mode": "static", "address": "10.0.0.9", "mask": 24, "gateway": "10.0.0.1"}
        }
    )
    shutil.copy(built.path, drive)
    answer = agent(capsys, "provision", "--usb", str(drive))
    assert answer["ok"] and answer["device"] == "cam-01" and answer["log_written"]
    assert answer["trust"] == "physical-presence"
    members = members_of(built.path)
    ssh = device.ssh_dir
    expected = {
        device.device_key: (members["device.key"], 0o600),
        device.device_crt: (members["device.crt"], 0o644),
        device.ca_crt: (members["ca.crt"], 0o644),
        device.network_json: (members["network.json"], 0o644),
        ssh / "ssh_host_ed25519_key": (members["ssh_host_ed25519_key"], 0o600),
        ssh / "ssh_host_ed25519_key.pub": (members["ssh_host_ed25519_key.pub"], 0o644),
        ssh / "authorized_keys": (members["authorized_keys"], 0o600),
    }
    for path, (data, mode) in expected.items():
        assert path.read_bytes() == data, path
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    identity = json.loads(device.device_json.read_text())
    assert identity["name"] == "cam-01" and identity["serial"] == "SN-0001"
    assert identity["provisioning"]["archive_sha256"] == fmt.sha256_hex(built.path.read_bytes())
    assert agent(capsys, "info")["name"] == "cam-01"
    log = log_of(drive)
    assert "PROVISIONED as cam-01" in log
    assert "PRIVATE KEY" not in log and "BEGIN" not in log


def test_refuses_to_provision_twice_until_reset(
    factory: Factory, device: Layout, drive: Path, capsys
) -> None:
    shutil.copy(factory.build().path, drive)
    assert agent(capsys, "provision", "--usb", str(drive))["ok"]
    first = tree(device)
    again = agent(capsys, "provision", "--usb", str(drive))
    assert again["error"]["code"] == "already-provisioned"
    assert "fleet-agent reset" in again["error"]["message"]
    assert tree(device) == first
    reset = agent(capsys, "reset")
    assert reset["was"] == "cam-01" and "etc/fleet/device.key" in reset["removed"]
    assert not device.device_json.exists() and not device.device_key.exists()
    assert (device.root / ".lab/hardware.json").exists()
    assert agent(capsys, "info")["error"]["code"] == "not-provisioned"
    for old in drive.glob("edgefleet-*.zip"):
        old.unlink()
    shutil.copy(factory.build().path, drive)
    assert agent(capsys, "provision", "--usb", str(drive))["ok"]


def test_pinned_anchor_accepts_its_ca_and_refuses_others(
    factory: Factory, device: Layout, drive: Path, tmp_path: Path, capsys
) -> None:
    anchor = fmt.trust_anchor_path(device)
    anchor.parent.mkdir(parents=True)
    anchor.write_text(factory.ca.fingerprint + "\n")
    other = make_factory(tmp_path / "other", org="Mallory")
    shutil.copy(other.build().path, drive)
    before = tree(device)
    answer = agent(capsys, "provision", "--usb", str(drive))
    assert answer["error"]["code"] == "untrusted-ca"
    assert tree(device) == before
    assert "REFUSED untrusted-ca" in log_of(drive)
    for old in drive.glob("edgefleet-*.zip"):
        old.unlink()
    shutil.copy(factory.build().path, drive)
    ok = agent(capsys, "provision", "--usb", str(drive))
    assert ok["trust"] == "pinned"
    agent(capsys, "reset")
    assert anchor.exists(), "reset keeps the manufacturing trust anchor"


def _tamper(members: dict[str, bytes]) -> dict[str, bytes]:
    return {**members, "network.json": b'{"eth0": {"mode": "dhcp"}}\n'}


def _bad_network(factory: Factory) -> dict[str, bytes]:
    members = members_of(factory.build().path)
    members["network.json"] = json.dumps(
        {"eth0": {"mode": "static", "address": "10.0.0.5", "mask": 24, "gateway": "10.0.9.1"}}
    ).encode()
    return resign(members, factory.ca.key)  # signed by our own CA: only the settings are wrong


CASES = {
    "tampered member": (lambda f: _tamper(members_of(f.build().path)), "tampered"),
    "tampered manifest": (
        lambda f: {
            **members_of(f.build().path),
            "manifest.json": members_of(f.build().path)["manifest.json"] + b" ",
        },
        "bad-signature",
    ),
    "missing manifest": (
        lambda f: {k: v for k, v in members_of(f.build().path).items() if k != "manifest.json"},
        "bad-manifest",
    ),
    "traversal": (
        lambda f: {**members_of(f.build().path), "../../etc/passwd": b"x"},
        "unsafe-archive",
    ),
    "absolute path": (
        lambda f: {**members_of(f.build().path), "/etc/shadow": b"x"},
        "unsafe-archive",
    ),
    "zip bomb": (
        lambda f: {**members_of(f.build().path), "release-keys/big.pub": b"\0" * (8 * 1024 * 1024)},
        "unsafe-archive",
    ),
    "bad static network": (_bad_network, "bad-network"),
    "serial mismatch": (lambda f: members_of(f.build(serial="SN-9999").path), "serial-mismatch"),
    "deadline passed": (
        lambda f: resign(
            members_of(f.build().path), f.ca.key, install_by="2020-01-01T00:00:00+00:00"
        ),
        "expired",
    ),
    "invalid device name": (
        lambda f: resign(members_of(f.build().path), f.ca.key, device="../cam 01"),
        "bad-manifest",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_archives_change_nothing_and_are_logged_on_the_drive(
    case: str, factory: Factory, device: Layout, drive: Path, capsys
) -> None:
    make, code = CASES[case]
    write_zip(drive / "edgefleet-cam-01.zip", make(factory))
    before = tree(device)
    answer = agent(capsys, "provision", "--usb", str(drive))
    assert answer["ok"] is False and answer["error"]["code"] == code, answer
    assert tree(device) == before
    assert f"REFUSED {code}: " in log_of(drive)
    assert "nothing was changed on the device" in log_of(drive)


def test_symlink_and_duplicate_members(
    factory: Factory, device: Layout, drive: Path, capsys
) -> None:
    members = members_of(factory.build().path)
    write_zip(drive / "edgefleet-cam-01.zip", members, symlinks=("device.key",))
    assert agent(capsys, "provision", "--usb", str(drive))["error"]["code"] == "unsafe-archive"
    with pytest.warns(UserWarning):
        write_zip(drive / "edgefleet-cam-01.zip", [*members.items(), ("device.key", b"second")])
    answer = agent(capsys, "provision", "--usb", str(drive))
    assert (
        answer["error"]["code"] == "unsafe-archive"
        and "more than once" in answer["error"]["message"]
    )
    assert not device.device_json.exists()


def test_archive_itself_a_symlink_is_refused(
    factory: Factory, device: Layout, drive: Path, capsys
) -> None:
    (drive / "edgefleet-cam-01.zip").symlink_to(factory.build().path)
    assert agent(capsys, "provision", "--usb", str(drive))["error"]["code"] == "unsafe-archive"


def test_drive_with_several_archives_picks_this_devices_serial(
    factory: Factory, device: Layout, drive: Path, capsys
) -> None:
    shutil.copy(factory.build("cam-01", serial="SN-0001").path, drive)
    shutil.copy(factory.build("cam-02", serial="SN-0002", port=2223).path, drive)
    assert agent(capsys, "provision", "--usb", str(drive))["device"] == "cam-01"


def test_drive_with_several_archives_and_no_serial_is_ambiguous(
    factory: Factory, device: Layout, drive: Path, capsys
) -> None:
    (device.root / ".lab/hardware.json").unlink()
    shutil.copy(factory.build("cam-01").path, drive)
    shutil.copy(factory.build("cam-02", port=2223).path, drive)
    assert agent(capsys, "provision", "--usb", str(drive))["error"]["code"] == "ambiguous"


def test_empty_drive_and_missing_drive(device: Layout, drive: Path, capsys) -> None:
    assert agent(capsys, "provision", "--usb", str(drive))["error"]["code"] == "not-found"
    assert "no edgefleet-*.zip" in log_of(drive)
    assert agent(capsys, "provision", "--usb", str(drive / "nope"))["error"]["code"] == "no-drive"


def test_disk_full_on_the_device_leaves_it_unprovisioned(
    factory: Factory, device: Layout, drive: Path, capsys
) -> None:
    shutil.copy(factory.build().path, drive)
    atomic_write_json(device.lab_faults, {"disk-full": True})
    before = tree(device)
    answer = agent(capsys, "provision", "--usb", str(drive))
    assert answer["error"]["code"] == "os-error"
    assert tree(device) == before
    assert "FAILED os-error" in log_of(drive)


def test_failure_part_way_restores_every_file(
    factory: Factory, device: Layout, drive: Path, capsys, monkeypatch
) -> None:
    shutil.copy(factory.build().path, drive)
    device.network_json.write_text('{"factory": "default"}\n')
    before = tree(device)
    real = agent_provision.atomic_write
    calls = {"n": 0}

    def flaky(path: Path, data: bytes, mode: int = 0o644) -> None:
        calls["n"] += 1
        if calls["n"] == 6:  # after network.json and the host key were written
            raise OSError(28, "No space left on device", str(path))
        real(path, data, mode)

    monkeypatch.setattr(agent_provision, "atomic_write", flaky)
    answer = agent(capsys, "provision", "--usb", str(drive))
    assert answer["error"]["code"] == "os-error"
    assert tree(device) == before
    assert not device.device_json.exists()


def test_read_only_drive_still_provisions_and_says_the_log_is_missing(
    factory: Factory, device: Layout, drive: Path, capsys, monkeypatch
) -> None:
    shutil.copy(factory.build().path, drive)

    def read_only(self: agent_provision.UsbLog, text: str) -> None:
        self.written = False  # what an EROFS on the log file does (root ignores chmod here)

    monkeypatch.setattr(agent_provision.UsbLog, "line", read_only)
    answer = agent(capsys, "provision", "--usb", str(drive))
    assert answer["ok"] and answer["log_written"] is False


def test_log_write_failure_is_not_fatal(tmp_path: Path) -> None:
    blocked = tmp_path / "drive"
    blocked.mkdir()
    (blocked / "edgefleet").write_text("a file where the log folder should be")
    log = agent_provision.UsbLog(blocked)
    log.line("hello")
    assert log.written is False


def test_layering_provision_agent_imports_no_controller_code() -> None:
    import re

    source = Path(agent_provision.__file__).read_text() + Path(fmt.__file__).read_text()
    banned = re.compile(r"^\s*(import|from)\s+(fleet\b|typer|rich|nornir|boto3)", re.MULTILINE)
    assert not banned.search(source)


def test_every_builtin_archive_is_valid_for_a_short_window(factory: Factory) -> None:
    built = factory.build(valid_for=timedelta(minutes=30))
    manifest = json.loads(members_of(built.path)["manifest.json"])
    assert fmt.parse_time(manifest["install_by"]) - fmt.parse_time(
        manifest["created_at"]
    ) == timedelta(minutes=30)


def test_unreadable_key_signed_by_our_ca_is_refused(
    factory: Factory, device: Layout, drive: Path, capsys
) -> None:
    members = members_of(factory.build().path)
    members["device.key"] = b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"
    write_zip(drive / "edgefleet-cam-01.zip", resign(members, factory.ca.key))
    answer = agent(capsys, "provision", "--usb", str(drive))
    assert answer["error"]["code"] == "bad-archive" and "unreadable" in answer["error"]["message"]
    assert not device.device_json.exists()


def test_mqtt_settings_are_installed_with_the_devices_own_paths(
    factory: Factory, device: Layout, drive: Path, capsys
) -> None:
    factory.project.config["mqtt"] = {
        "endpoint": "mqtt.example",
        "port": 8883,
        "mode": "broker",
        "cert": "certs/controller.crt",
    }
    members = members_of(factory.build().path)
    assert "cert" not in json.loads(members["mqtt.json"])  # never the controller's files
    shutil.copy(factory.build().path, drive)
    assert agent(capsys, "provision", "--usb", str(drive))["ok"]
    settings = json.loads((device.etc / "mqtt.json").read_text())
    assert settings["endpoint"] == "mqtt.example" and settings["thing_name"] == "cam-01"
    assert settings["cert"] == str(device.device_crt) and settings["key"] == str(device.device_key)
    assert settings["ca"] == str(device.ca_crt)
    agent(capsys, "reset")
    assert not (device.etc / "mqtt.json").exists()


def test_mqtt_settings_carrying_paths_are_refused(factory: Factory, tmp_path: Path) -> None:
    members = members_of(factory.build().path)
    members["mqtt.json"] = json.dumps({"endpoint": "x", "key": "/etc/shadow"}).encode()
    path = write_zip(tmp_path / "edgefleet-cam-01.zip", resign(members, factory.ca.key))
    with pytest.raises(fmt.ProvisioningError, match="mqtt.json"):
        fmt.verify_archive(path)


# ---------------------------------------------------------------- the drive is hostile (issue 12.4)


def test_two_insertions_cannot_pin_an_attackers_ca_through_a_linked_log(
    factory: Factory, device: Layout, drive: Path, tmp_path: Path, capsys
) -> None:
    """The reported attack: the drive's log is a link to the trust anchor and the
    archive's name carries the attacker's fingerprint between spaces. The first
    insertion used to append that fingerprint to the anchor; the second then
    provisioned the box with the attacker's CA as "pinned"."""
    anchor = pin(device, factory.ca.fingerprint + "\n")
    pinned = anchor.read_bytes()
    mallory = make_factory(tmp_path / "mallory", org="Mallory")
    (drive / "edgefleet").mkdir()
    (drive / "edgefleet/provision.log").symlink_to(anchor)
    name = f"edgefleet- {mallory.ca.fingerprint} .zip"
    shutil.copy(mallory.build().path, drive / name)
    for _insertion in range(2):
        answer = agent(capsys, "provision", "--usb", str(drive))
        assert answer["error"]["code"] == "untrusted-ca", answer
        assert anchor.read_bytes() == pinned
    assert not device.device_json.exists()


def test_a_linked_log_folder_is_never_written_through(
    factory: Factory, device: Layout, drive: Path, capsys
) -> None:
    target = device.ssh_dir
    target.mkdir(parents=True)
    (drive / "edgefleet").symlink_to(target)
    shutil.copy(factory.build().path, drive)
    answer = agent(capsys, "provision", "--usb", str(drive))
    assert answer["ok"] and answer["log_written"] is False
    assert answer["log_problem"] == "edgefleet/ on the drive is a link or not a folder"
    assert not (target / "provision.log").exists()


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "fifo"])
def test_a_log_that_is_not_a_plain_file_is_refused(
    kind: str, device: Layout, drive: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "authorized_keys"
    victim.write_text("ssh-ed25519 AAAA operator\n")
    (drive / "edgefleet").mkdir()
    log_path = drive / "edgefleet/provision.log"
    if kind == "symlink":
        log_path.symlink_to(victim)
    elif kind == "hardlink":
        log_path.hardlink_to(victim)
    else:
        os.mkfifo(log_path)  # nobody reads it: a blocking open would hang the first boot
    log = agent_provision.UsbLog(drive)
    log.line("hello")
    assert log.written is False
    assert victim.read_text() == "ssh-ed25519 AAAA operator\n"


def test_names_from_the_drive_are_escaped_in_the_log(
    factory: Factory, device: Layout, drive: Path, tmp_path: Path, capsys
) -> None:
    """A newline in an archive's name used to write a line of the attacker's choice
    (an SSH key, say) into the log, or any file the log was linked to."""
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMallory mallory@evil"
    name = f"edgefleet-x\n{key}\n\t.zip"
    shutil.copy(factory.build().path, drive / name)
    agent(capsys, "provision", "--usb", str(drive))
    log = log_of(drive)
    assert "edgefleet-x\\x0assh-ed25519\\x20AAAA" in log
    for line in log.splitlines():
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", line), line
        assert not line.startswith("ssh-") and "\t" not in line


def test_printable_keeps_a_name_one_token() -> None:
    assert fmt.printable("edgefleet-cam-01.zip") == "edgefleet-cam-01.zip"
    assert fmt.printable("a b\nc\\d\u2028é") == "a\\x20b\\x0ac\\x5cd\\u2028\\xe9"


ANCHORS = {
    "two tokens on one line": "{good} {evil}\n",
    "bare hex without sha256:": "{bare}\n",
    "log line around a fingerprint": "2026-01-01T00:00:00Z archive edgefleet- {evil} .zip\n",
    "upper-case hex": "{upper}\n",
    "blank line": "{good}\n\n",
    "carriage return": "{good}\r\n",
    "empty file": "",
    "not text": "\udcff",
}


@pytest.mark.parametrize("case", sorted(ANCHORS))
def test_a_malformed_trust_anchor_refuses_every_archive(
    case: str, factory: Factory, device: Layout, drive: Path, capsys
) -> None:
    good, evil = factory.ca.fingerprint, "sha256:" + "ab" * 32
    text = ANCHORS[case].format(
        good=good, evil=evil, bare=good.removeprefix("sha256:"), upper=good.upper()
    )
    anchor = fmt.trust_anchor_path(device)
    anchor.parent.mkdir(parents=True)
    anchor.write_bytes(text.encode("utf-8", "surrogateescape"))
    shutil.copy(factory.build().path, drive)
    before = tree(device)
    answer = agent(capsys, "provision", "--usb", str(drive))
    assert answer["error"]["code"] == "bad-anchor", answer
    assert "one sha256:<fingerprint> per line" in answer["error"]["message"]
    assert tree(device) == before
    assert "REFUSED bad-anchor" in log_of(drive)


def test_a_strict_anchor_still_allows_a_rotated_ca(
    factory: Factory, device: Layout, drive: Path, capsys
) -> None:
    pin(device, f"sha256:{'0' * 64}\n{factory.ca.fingerprint}\n")
    shutil.copy(factory.build().path, drive)
    assert agent(capsys, "provision", "--usb", str(drive))["trust"] == "pinned"


def test_an_anchor_that_is_a_dangling_link_refuses_every_archive(
    factory: Factory, device: Layout, drive: Path, capsys
) -> None:
    # Only a missing anchor means "not pinned"; a link to nothing (a partition not
    # mounted, a damaged root) was read as missing and let any CA provision the box.
    anchor = fmt.trust_anchor_path(device)
    anchor.parent.mkdir(parents=True)
    anchor.symlink_to(device.root / "mnt/factory/fleet-ca.sha256")
    shutil.copy(factory.build().path, drive)
    answer = agent(capsys, "provision", "--usb", str(drive))
    assert answer["error"]["code"] == "bad-anchor", answer
    assert not device.device_json.exists()


@pytest.mark.parametrize("manifest", [b"[]", b'"x"', b"3", b"null"])
def test_another_archive_whose_manifest_is_not_an_object_does_not_stop_this_one(
    manifest: bytes, factory: Factory, device: Layout, drive: Path, capsys
) -> None:
    shutil.copy(factory.build("cam-01", serial="SN-0001").path, drive)
    members = members_of(factory.build("cam-02", serial="SN-0002", port=2223).path)
    members[fmt.MANIFEST] = manifest  # was AttributeError: internal-error, nothing provisioned
    write_zip(drive / "edgefleet-cam-02.zip", members)
    assert agent(capsys, "provision", "--usb", str(drive))["device"] == "cam-01"
