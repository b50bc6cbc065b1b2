"""Provisioning archives: build, sign, pin, verify (every bad input), USB drive, lab first boot."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from ci_skips import in_ci
from fixtures_provisioning import (
    HAVE_SSHD,
    PASSPHRASE,
    Factory,
    make_factory,
    members_of,
    resign,
    run_cli,
    write_zip,
)
from fleet_runtime import provisioning as fmt
from fleet_runtime.provisioning import Expectations, ProvisioningError
from labkit import CALM_HEALTH

from fleet import provisioning as prov
from fleet.errors import ConfigError, UsageError
from fleet.lab import Lab
from fleet.project import Project
from fleet.registry import open_registry


@pytest.fixture
def factory(tmp_path: Path) -> Factory:
    """A throwaway project with a fresh fleet CA that builds real archives."""
    return make_factory(tmp_path / "project")


ENV = {"FLEET_CA_PASSPHRASE": PASSPHRASE.decode()}
STATIC = {
    "eth0": {
        "mode": "static",
        "address": "192.168.10.20",
        "mask": "255.255.255.0",
        "gateway": "192.168.10.1",
        "dns": ["192.168.10.1", "1.1.1.1"],
    },
    "eth1": {"mode": "dhcp"},
    "ntp": ["0.pool.ntp.org", "10.0.0.1"],
}


def refused(path: Path, code: str, **expect: object) -> ProvisioningError:
    with pytest.raises(ProvisioningError) as info:
        fmt.verify_archive(path, Expectations(**expect))  # type: ignore[arg-type]
    assert info.value.code == code, info.value.message
    return info.value


# ---------------------------------------------------------------- building


def test_archive_holds_every_member_signed_and_private(factory: Factory) -> None:
    built = factory.build(network=STATIC)
    assert built.path.name == "edgefleet-cam-01.zip"
    assert stat.S_IMODE(built.path.stat().st_mode) == 0o600
    members = members_of(built.path)
    assert set(members) == {"manifest.json", "manifest.sig", *fmt.REQUIRED_MEMBERS}
    manifest = json.loads(members["manifest.json"])
    assert manifest["device"] == "cam-01" and manifest["serial"] == "SN-0001"
    for name, entry in manifest["members"].items():
        assert entry["sha256"] == fmt.sha256_hex(members[name])
    assert fmt.verify_bytes(
        factory.ca.cert.public_key(), members["manifest.json"], members["manifest.sig"]
    )
    with zipfile.ZipFile(built.path) as zf:
        assert all((i.external_attr >> 16) & 0o777 == 0o600 for i in zf.infolist())
    identity = json.loads(members["device.json"])
    assert identity["mqtt"]["thing_name"] == "cam-01"
    assert json.loads(members["network.json"])["eth0"]["gateway"] == "192.168.10.1"
    assert members["authorized_keys"].decode().startswith("ssh-ed25519 ")
    archive = prov.verify_file(factory.project, built.path)
    assert archive.trust == "pinned" and archive.device == "cam-01"


def test_host_key_is_pinned_at_build_time(factory: Factory) -> None:
    built = factory.build(port=2201)
    factory.build("cam-02", port=22)
    lines = factory.project.known_hosts.read_text().splitlines()
    pub = members_of(built.path)["ssh_host_ed25519_key.pub"].decode().split()[:2]
    assert f"[127.0.0.1]:2201 {' '.join(pub)}" in lines
    assert any(ln.startswith("127.0.0.1 ssh-ed25519 ") for ln in lines)  # port 22: bare host
    # A new archive pins its key beside the first (the box may have booted the first
    # archive already), as pending; a third replaces that pending key, never piles up.
    factory.build(port=2201)
    rebuilt = factory.build(port=2201)
    lines = [ln for ln in factory.project.known_hosts.read_text().splitlines()
             if ln.startswith("[127.0.0.1]:2201 ")]
    assert lines == [f"[127.0.0.1]:2201 {' '.join(pub)}",
                     f"[127.0.0.1]:2201 {' '.join(rebuilt.host_key.split()[:2])} edgefleet-pending"]
    assert stat.S_IMODE(factory.project.known_hosts.stat().st_mode) == 0o600


def test_registry_records_awaiting_provisioning(factory: Factory) -> None:
    built = factory.build(serial="SN-9")
    store = open_registry(factory.project)
    try:
        device = store.get_device("cam-01")
    finally:
        store.close()
    assert device is not None and device["provisioning"] == "AWAITING_PROVISIONING"
    assert device["serial"] == "SN-9" and device["port"] == 2222
    assert device["cert_fingerprint"] == built.issued.fingerprint.removeprefix("sha256:")
    assert device["host_key_fingerprint"] == prov.ssh_fingerprint(built.host_key)


def test_many_archives_in_parallel(factory: Factory) -> None:
    specs = [factory.spec(f"cam-{i:03d}", port=3000 + i, serial=f"SN{i}") for i in range(40)]
    report = prov.build_archives(
        factory.project,
        factory.ca,
        specs,
        prov.BuildSettings(factory.project.root / "many"),
        workers=4,
    )
    assert len(report.built) == 40 and not report.failed
    assert len(factory.project.known_hosts.read_text().splitlines()) == 40
    assert len({b.issued.cert.serial_number for b in report.built}) == 40


@pytest.mark.parametrize(
    "network, message",
    [
        (
            {"eth0": {"mode": "static", "address": "192.168.1.300", "mask": "24"}},
            "not an IP address",
        ),
        (
            {"eth0": {"mode": "static", "address": "192.168.1.10", "mask": "255.0.255.0"}},
            "not a valid mask",
        ),
        (
            {
                "eth0": {
                    "mode": "static",
                    "address": "192.168.1.10",
                    "mask": "255.255.255.0",
                    "gateway": "192.168.2.1",
                }
            },
            "not another host on 192.168.1.0/24",
        ),
        (
            {
                "eth0": {
                    "mode": "static",
                    "address": "192.168.1.10",
                    "mask": 24,
                    "gateway": "192.168.1.10",
                }
            },
            "not another host",
        ),
        (
            {"eth0": {"mode": "static", "address": "192.168.1.0", "mask": 24}},
            "network or broadcast",
        ),
        (
            {"eth0": {"mode": "static", "address": "10.0.0.5", "mask": 8, "dns": ["dns.example"]}},
            "not an IP address",
        ),
        ({"eth0": {"mode": "static", "mask": 24}}, "'address' is a required property"),
        ({"eth0": {"mode": "dhcp", "address": "10.0.0.5"}}, "should not be valid"),
        ({"eth2": {"mode": "dhcp"}}, "Additional properties"),
        ({"ntp": [f"ntp{i}.example" for i in range(6)]}, "is too long"),
    ],
)
def test_invalid_network_settings_are_refused(network: dict, message: str) -> None:
    with pytest.raises(ProvisioningError, match=message) as info:
        fmt.validate_network(network)
    assert info.value.code == "bad-network"


def test_valid_network_settings() -> None:
    assert fmt.validate_network(STATIC)["eth0"]["address"] == "192.168.10.20"
    assert fmt.validate_network({}) == fmt.DEFAULT_NETWORK
    point_to_point = {
        "eth1": {"mode": "static", "address": "10.1.1.1", "mask": 31, "gateway": "10.1.1.0"}
    }
    assert fmt.validate_network(point_to_point)["eth1"]["mask"] == 31


def test_bad_inventory_network_refuses_the_whole_run_before_anything_changes(
    factory: Factory,
) -> None:
    good = factory.spec("cam-01")
    bad = factory.spec(
        "cam-02",
        network={
            "eth0": {
                "mode": "static",
                "address": "10.0.0.5",
                "mask": "255.255.255.0",
                "gateway": "10.0.1.1",
            }
        },
    )
    out = factory.project.root / "refused"
    with pytest.raises(ConfigError) as info:
        prov.build_archives(factory.project, factory.ca, [good, bad], prov.BuildSettings(out))
    assert "inventory host cam-02" in str(info.value) and "$.data.network.eth0.gateway" in str(
        info.value
    )
    assert not out.exists() and not factory.project.known_hosts.exists()


@pytest.mark.parametrize("name", ["", "a/b", "../x", "dev.1", "x" * 256, "sp ace"])
def test_invalid_device_names_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="invalid device name"):
        prov.check_name(name)
    with pytest.raises(ProvisioningError):
        fmt.archive_name(name)


def test_durations() -> None:
    assert prov.parse_duration("7d") == timedelta(days=7)
    assert prov.parse_duration("30m") == timedelta(minutes=30)
    for bad in ("", "7", "0d", "91d", "1y", "-1h"):
        with pytest.raises(UsageError):
            prov.parse_duration(bad)


# ---------------------------------------------------------------- verification: bad input


def test_tampered_member(factory: Factory, tmp_path: Path) -> None:
    members = members_of(factory.build().path)
    members["authorized_keys"] = b"ssh-ed25519 AAAAattacker evil\n"
    refused(write_zip(tmp_path / "t.zip", members), "tampered")


def test_tampered_manifest(factory: Factory, tmp_path: Path) -> None:
    members = members_of(factory.build().path)
    manifest = json.loads(members["manifest.json"])
    manifest["install_by"] = "2099-01-01T00:00:00+00:00"
    members["manifest.json"] = json.dumps(manifest).encode()
    refused(write_zip(tmp_path / "t.zip", members), "bad-signature")


@pytest.mark.parametrize(
    "missing, code",
    [
        ("manifest.json", "bad-manifest"),
        ("manifest.sig", "bad-manifest"),
        ("device.key", "tampered"),
    ],
)
def test_missing_manifest_signature_or_member(
    factory: Factory, tmp_path: Path, missing: str, code: str
) -> None:
    members = members_of(factory.build().path)
    del members[missing]
    refused(write_zip(tmp_path / "t.zip", members), code)


def test_signature_by_another_ca(factory: Factory, tmp_path: Path) -> None:
    other = make_factory(tmp_path / "other", org="Mallory")
    members = members_of(factory.build().path)
    # the attacker re-signs with their own key but keeps our ca.crt
    forged = resign(members, other.ca.key)
    refused(write_zip(tmp_path / "t.zip", forged), "bad-signature")


def test_whole_archive_from_another_ca_needs_the_pinned_anchor(
    factory: Factory, tmp_path: Path
) -> None:
    other = make_factory(tmp_path / "other", org="Mallory")
    foreign = other.build().path
    # Physical presence: internally consistent, so accepted; the anchor is what stops it.
    assert fmt.verify_archive(foreign).trust == "physical-presence"
    refused(foreign, "untrusted-ca", trusted_ca=(factory.ca.fingerprint,))
    with pytest.raises(ConfigError, match="untrusted-ca"):
        prov.verify_file(factory.project, foreign)


def test_deadline_passed(factory: Factory) -> None:
    built = factory.build(valid_for=timedelta(hours=1))
    later = datetime.now(timezone.utc) + timedelta(hours=2)
    error = refused(built.path, "expired", now=later)
    assert "build a new one" in error.message


def test_serial_mismatch_and_archive_for_another_device(factory: Factory) -> None:
    built = factory.build(serial="SN-0001")
    assert fmt.verify_archive(built.path, Expectations(serial="SN-0001")).device == "cam-01"
    error = refused(built.path, "serial-mismatch", serial="SN-7777")
    assert "SN-0001" in error.message and "SN-7777" in error.message
    refused(built.path, "wrong-device", device="cam-02")


@pytest.mark.parametrize(
    "name, code",
    [
        ("../etc/fleet/device.key", "unsafe-archive"),
        ("release-keys/../../evil", "unsafe-archive"),
        ("/etc/passwd", "unsafe-archive"),
        ("C:/evil", "unsafe-archive"),
        ("surprise.sh", "unsafe-archive"),
    ],
)
def test_unsafe_member_names(factory: Factory, tmp_path: Path, name: str, code: str) -> None:
    members = members_of(factory.build().path)
    members[name] = b"x"
    refused(write_zip(tmp_path / "t.zip", members), code)


def test_symlink_member(factory: Factory, tmp_path: Path) -> None:
    members = members_of(factory.build().path)
    path = write_zip(tmp_path / "t.zip", members, symlinks=("ca.crt",))
    assert "symbolic link" in refused(path, "unsafe-archive").message


def test_duplicate_member(factory: Factory, tmp_path: Path) -> None:
    members = members_of(factory.build().path)
    entries = list(members.items()) + [("authorized_keys", b"ssh-ed25519 AAAAsecond\n")]
    with pytest.warns(UserWarning, match="Duplicate name"):
        path = write_zip(tmp_path / "t.zip", entries)
    assert "more than once" in refused(path, "unsafe-archive").message


def test_zip_bomb_member(factory: Factory, tmp_path: Path) -> None:
    members = members_of(factory.build().path)
    members["release-keys/bomb.pub"] = b"\0" * (20 * 1024 * 1024)  # 20 MiB inflating from ~20 KiB
    path = write_zip(tmp_path / "t.zip", members)
    assert path.stat().st_size < 200_000
    assert "bytes" in refused(path, "unsafe-archive").message


def test_zip_bomb_with_lying_header(factory: Factory, tmp_path: Path) -> None:
    members = members_of(factory.build().path)
    members["release-keys/bomb.pub"] = b"\0" * (2 * 1024 * 1024)
    path = write_zip(tmp_path / "t.zip", members)
    with zipfile.ZipFile(path) as zf:
        declared = zf.getinfo("release-keys/bomb.pub").file_size.to_bytes(4, "little")
    # Declare 100 bytes in both headers: the reader must not trust it and inflate 2 MiB.
    path.write_bytes(path.read_bytes().replace(declared, (100).to_bytes(4, "little")))
    with pytest.raises(ProvisioningError) as info:
        fmt.verify_archive(path)
    assert info.value.code in ("bad-archive", "unsafe-archive")


def test_not_a_zip_and_oversized_file(tmp_path: Path) -> None:
    junk = tmp_path / "edgefleet-x.zip"
    junk.write_bytes(b"not a zip at all")
    refused(junk, "bad-archive")
    junk.write_bytes(b"\0" * (fmt.MAX_ARCHIVE_BYTES + 1))
    refused(junk, "unsafe-archive")


def test_release_keys_travel_in_the_archive(factory: Factory) -> None:
    release = factory.project.certs / "release"
    release.mkdir()
    (release / "rel-2026.pub").write_bytes(b"release public key\n")
    members = members_of(factory.build().path)
    assert members["release-keys/rel-2026.pub"] == b"release public key\n"


# ---------------------------------------------------------------- USB drive


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[callable]:  # type: ignore[valid-type]
    """Mount small tmpfs drives (root only); skip where mounting is not allowed."""
    mounted: list[Path] = []

    def mount(size: str = "1m", *, read_only: bool = False) -> Path:
        point = tmp_path / f"drive{len(mounted)}"
        point.mkdir()
        opts = f"size={size}" + (",ro" if read_only else "")
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", str(point)], check=False)


def test_write_to_a_mounted_drive_reads_back_and_wipe_removes_everything(
    factory: Factory, tmpfs
) -> None:
    drive = tmpfs("1m")
    (drive / "holiday.jpg").write_bytes(b"keep me")
    built = factory.build()
    written = prov.write_to_drive(built.path, drive)
    assert written.path == drive / "edgefleet-cam-01.zip"
    assert written.path.read_bytes() == built.path.read_bytes()
    assert stat.S_IMODE(written.path.stat().st_mode) == 0o600
    (drive / "edgefleet").mkdir()
    (drive / "edgefleet/provision.log").write_text("log\n")
    removed = prov.wipe_drive(drive)
    assert sorted(removed) == ["edgefleet", "edgefleet-cam-01.zip"]
    assert sorted(p.name for p in drive.iterdir()) == ["holiday.jpg"]


def test_full_drive_is_refused_before_writing(factory: Factory, tmpfs) -> None:
    drive = tmpfs("16k")  # smaller than archive + room for the device's log
    built = factory.build()
    with pytest.raises(prov.DriveError, match="not enough space"):
        prov.write_to_drive(built.path, drive)
    assert list(drive.iterdir()) == []


def test_drive_that_fills_up_while_writing(factory: Factory, tmpfs, monkeypatch) -> None:
    drive = tmpfs("8k")
    (drive / "filler").write_bytes(b"x" * 6144)
    built = factory.build()
    # The drive claims room (as some do) and then fills: the kernel's ENOSPC is reported plainly.
    real = shutil.disk_usage
    monkeypatch.setattr(
        shutil, "disk_usage", lambda p: real(p)._replace(free=10 * 1024 * 1024)
    )
    with pytest.raises(prov.DriveError, match="drive is full"):
        prov.write_to_drive(built.path, drive)
    assert sorted(p.name for p in drive.iterdir()) == ["filler"]


def test_read_only_drive_is_refused(factory: Factory, tmpfs) -> None:
    drive = tmpfs("1m", read_only=True)
    with pytest.raises(prov.DriveError, match="read-only"):
        prov.write_to_drive(factory.build().path, drive)


def test_max_bytes_caps_what_the_drive_may_take(factory: Factory, tmp_path: Path) -> None:
    drive = tmp_path / "folder"
    drive.mkdir()
    built = factory.build()
    with pytest.raises(prov.DriveError, match="not a mount point"):
        prov.write_to_drive(built.path, drive)
    with pytest.raises(prov.DriveError, match="not enough space"):
        prov.write_to_drive(built.path, drive, force=True, max_bytes=1000)
    assert prov.write_to_drive(built.path, drive, force=True).bytes == built.path.stat().st_size


def test_cli_archive_usb_verify_wipe(tmp_path: Path) -> None:
    f = make_factory(tmp_path / "p")
    inv = f.project.inventories / "site"
    inv.mkdir(parents=True)
    (inv / "hosts.yaml").write_text(
        "cam-01:\n  hostname: 10.0.0.5\n  port: 2222\n"
        "  data: {site: berlin, hardware: orin, arch: aarch64, serial: SN1,"
        " network: {eth0: {mode: static, address: 10.0.0.5, mask: 24, gateway: 10.0.0.1}}}\n"
        "cam-02:\n  hostname: 10.0.0.6\n  data: {site: berlin, hardware: orin, arch: aarch64}\n"
        "cam-03:\n  hostname: 10.0.0.7\n  data: {site: berlin, hardware: orin, arch: aarch64,"
        " network: {eth0: {mode: static, address: 10.0.0.7, mask: 24, gateway: 10.9.0.1}}}\n"
    )
    root = f.project.root
    bad = run_cli(root, "provision", "archive", "cam-03", "-i", "site", env=ENV)
    assert bad.exit_code == 2 and "gateway" in bad.stderr and "cam-03" in bad.stderr
    badname = run_cli(root, "provision", "archive", "cam/01", "-i", "site", env=ENV)
    assert badname.exit_code == 2 and "invalid device name" in badname.stderr
    built = run_cli(
        root, "provision", "all", "-i", "site", "--limit", "cam-01,cam-02", "--json", env=ENV
    )
    assert built.exit_code == 0, built.stderr
    report = json.loads(built.stdout)
    assert sorted(b["device"] for b in report["built"]) == ["cam-01", "cam-02"]
    archive = Path(report["built"][0]["archive"])
    assert archive.parent == root / ".fleet/archives"
    checked = run_cli(root, "provision", "verify", str(archive), "--json")
    assert checked.exit_code == 0 and json.loads(checked.stdout)["trust"] == "pinned"
    drive = tmp_path / "drive"
    drive.mkdir()
    refused_mount = run_cli(
        root, "provision", "usb", "cam-01", "--mount", str(drive), "-i", "site", env=ENV
    )
    assert refused_mount.exit_code == 1 and "not a mount point" in refused_mount.stderr
    usb = run_cli(
        root, "provision", "usb", "cam-01", "--mount", str(drive), "--force", "-i", "site", env=ENV
    )
    assert usb.exit_code == 0, usb.stderr
    assert "holds secrets" in usb.stderr and "PRIVATE" not in usb.stdout + usb.stderr
    wrong = run_cli(
        root,
        "provision",
        "usb",
        "cam-02",
        "--mount",
        str(drive),
        "--force",
        "--archive",
        str(drive / "edgefleet-cam-01.zip"),
    )
    assert wrong.exit_code == 2 and "is for device cam-01" in wrong.stderr
    wiped = run_cli(root, "provision", "wipe", "--mount", str(drive), "--force", "--json")
    assert json.loads(wiped.stdout)["removed"] == ["edgefleet-cam-01.zip"]


# ---------------------------------------------------------------- lab: factory device end to end


@pytest.fixture
def factory_lab(tmp_path: Path) -> Iterator[Lab]:
    if not HAVE_SSHD and not in_ci():
        pytest.skip("OpenSSH sshd not installed")
    root = tmp_path / "lab"
    root.mkdir()
    (root / "fleet.yaml").write_text(CALM_HEALTH)
    assert run_cli(root, "ca", "init", "--org", "Acme", env=ENV).exit_code == 0
    lab = Lab(Project.locate(root))
    lab.up(1, 2, ssh="openssh", factory=True)
    yield lab
    lab.down()


def test_factory_device_provisioned_end_to_end(factory_lab: Lab, tmp_path: Path) -> None:
    root = factory_lab.project.root
    assert not factory_lab.running(factory_lab.device("berlin-01"))
    drive = tmp_path / "usb"
    drive.mkdir()
    usb = run_cli(root, "provision", "usb", "berlin-01", "--mount", str(drive), "--force", env=ENV)
    assert usb.exit_code == 0, usb.stderr
    pinned = factory_lab.project.known_hosts.read_text()
    boot = run_cli(root, "lab", "usb", "berlin-01", str(drive), "--json")
    assert boot.exit_code == 0, boot.stderr
    answer = json.loads(boot.stdout)
    assert answer["trust"] == "pinned" and answer["device"] == "berlin-01"
    assert factory_lab.project.known_hosts.read_text() == pinned  # no auto-add, no re-pin
    device_pub = (factory_lab.layout("berlin-01").ssh_dir / "ssh_host_ed25519_key.pub").read_text()
    port = factory_lab.device("berlin-01").port
    assert f"[127.0.0.1]:{port} {' '.join(device_pub.split()[:2])}" in pinned.splitlines()
    health = run_cli(root, "health", "-i", "lab", "--limit", "berlin-01", "--json")
    assert health.exit_code == 0, health.stdout + health.stderr
    report = json.loads(health.stdout)
    assert report["devices"][0]["verdict"] == "healthy", report
    store = open_registry(factory_lab.project)
    try:
        assert store.get_device("berlin-01")["provisioning"] == "PROVISIONED"
        assert store.get_device("berlin-02") is None  # never archived: not in the registry
    finally:
        store.close()
    log = (drive / "edgefleet/provision.log").read_text()
    assert "PROVISIONED as berlin-01" in log and "BEGIN" not in log


def test_a_device_provisioned_while_the_lab_broker_runs_joins_it(
    factory_lab: Lab, tmp_path: Path
) -> None:
    """USB first boot with `lab up --mqtt` running: the new device heartbeats with its own
    fleet-CA certificate; a factory reset stops its daemon."""
    import time

    from fixtures_mqtt import require_mosquitto
    from fleet_runtime.layout import read_json

    from fleet import heartbeats
    from fleet.lab.mqtt import LabMqtt

    require_mosquitto()
    root, project = factory_lab.project.root, factory_lab.project
    roots = {n: factory_lab.root(n) for n in factory_lab.devices()}
    mq = LabMqtt(project)
    mq.up(roots, 0.5)
    try:
        assert mq.daemons() == {}  # factory boxes have no identity: nothing to heartbeat with
        drive = tmp_path / "usb"
        drive.mkdir()
        assert run_cli(root, "provision", "usb", "berlin-01", "--mount", str(drive), "--force",
                       env=ENV).exit_code == 0
        boot = run_cli(root, "lab", "usb", "berlin-01", str(drive), "--json")
        assert boot.exit_code == 0 and json.loads(boot.stdout)["mqtt"] is True, boot.stderr
        layout = factory_lab.layout("berlin-01")
        assert read_json(layout.etc / "mqtt.json")["cert"] == str(layout.device_crt)
        deadline, found = time.monotonic() + 20, {}
        while "berlin-01" not in found and time.monotonic() < deadline:
            found = heartbeats.latest(heartbeats.settings_for(project))
        assert found["berlin-01"]["device"] == "berlin-01"
        assert run_cli(root, "lab", "reset", "berlin-01").exit_code == 0
        assert "berlin-01" not in mq.daemons()
    finally:
        mq.down(roots)


def test_factory_device_refuses_another_devices_drive(factory_lab: Lab, tmp_path: Path) -> None:
    root = factory_lab.project.root
    drive = tmp_path / "usb"
    drive.mkdir()
    assert (
        run_cli(
            root, "provision", "usb", "berlin-02", "--mount", str(drive), "--force", env=ENV
        ).exit_code
        == 0
    )
    before = sorted(
        p.relative_to(factory_lab.root("berlin-01")).as_posix()
        for p in factory_lab.root("berlin-01").rglob("*")
        if ".lab" not in p.parts and "log" not in p.parts  # lab state, the agent's own logs
    )
    boot = run_cli(root, "lab", "usb", "berlin-01", str(drive))
    assert boot.exit_code == 1 and "serial-mismatch" in boot.stderr
    after = sorted(
        p.relative_to(factory_lab.root("berlin-01")).as_posix()
        for p in factory_lab.root("berlin-01").rglob("*")
        if ".lab" not in p.parts and "log" not in p.parts  # lab state, the agent's own logs
    )
    assert before == after
    assert not factory_lab.running(factory_lab.device("berlin-01"))
    assert "REFUSED serial-mismatch" in (drive / "edgefleet/provision.log").read_text()


def test_lab_reset_then_a_new_archive_provisions_again(factory_lab: Lab, tmp_path: Path) -> None:
    root = factory_lab.project.root
    drive = tmp_path / "usb"
    drive.mkdir()
    for _ in range(2):
        assert (
            run_cli(
                root, "provision", "usb", "berlin-02", "--mount", str(drive), "--force", env=ENV
            ).exit_code
            == 0
        )
        boot = run_cli(root, "lab", "usb", "berlin-02", str(drive))
        assert boot.exit_code == 0, boot.stderr
        assert factory_lab.running(factory_lab.device("berlin-02"))
        reset = run_cli(root, "lab", "reset", "berlin-02")
        assert reset.exit_code == 0, reset.stderr
        assert not factory_lab.running(factory_lab.device("berlin-02"))
        assert not factory_lab.layout("berlin-02").device_json.exists()
        assert fmt.trust_anchor_path(factory_lab.layout("berlin-02")).exists()
    # After a reset the same archive works again until its deadline (documented limit).
    again = run_cli(root, "lab", "usb", "berlin-02", str(drive))
    assert again.exit_code == 0, again.stderr


def _pins(lab: Lab, name: str) -> list[str]:
    port = lab.device(name).port
    return [ln for ln in lab.project.known_hosts.read_text().splitlines()
            if ln.startswith(f"[127.0.0.1]:{port} ")]


def _reachable(lab: Lab, name: str) -> bool:
    health = run_cli(lab.project.root, "health", "-i", "lab", "--limit", name, "--json")
    return bool(json.loads(health.stdout)["devices"][0]["verdict"] != "unreachable")


def _issued(lab: Lab, name: str) -> int:
    lines = (lab.project.certs / "issued.jsonl").read_text().splitlines()
    return sum(json.loads(ln)["device"] == name for ln in lines)


def test_provision_all_leaves_provisioned_devices_alone_until_replace_identity(
    factory_lab: Lab, tmp_path: Path
) -> None:
    """Issue 12.5: `provision all` re-pinned running devices' host keys and locked the
    controller out. Now they are skipped; --replace-identity pins the new key beside the
    old one until the device boots with the new archive; `provision usb` reuses it."""
    root = factory_lab.project.root
    first = tmp_path / "usb1"
    first.mkdir()
    assert run_cli(root, "provision", "usb", "berlin-01", "--mount", str(first), "--force",
                   env=ENV).exit_code == 0
    assert run_cli(root, "lab", "usb", "berlin-01", str(first)).exit_code == 0
    running = _pins(factory_lab, "berlin-01")
    assert len(running) == 1

    every = run_cli(root, "provision", "all", "-i", "lab", "--json", env=ENV)
    assert every.exit_code == 0, every.stderr
    doc = json.loads(every.stdout)
    assert [b["device"] for b in doc["built"]] == ["berlin-02"]
    assert "already provisioned" in doc["skipped"]["berlin-01"]
    assert _pins(factory_lab, "berlin-01") == running and _reachable(factory_lab, "berlin-01")
    named = run_cli(root, "provision", "archive", "berlin-01", "-i", "lab", env=ENV)
    assert named.exit_code == 2 and "--replace-identity" in named.stderr

    replace = run_cli(root, "provision", "all", "-i", "lab", "--limit", "berlin-01",
                      "--replace-identity", "--json", env=ENV)
    assert replace.exit_code == 0, replace.stderr
    both = _pins(factory_lab, "berlin-01")
    assert both[0] == running[0] and len(both) == 2 and both[1].endswith(" edgefleet-pending")
    assert _reachable(factory_lab, "berlin-01")  # still on its old identity: old key accepted
    assert _pins(factory_lab, "berlin-01") == both

    certificates = _issued(factory_lab, "berlin-01")
    assert run_cli(root, "lab", "reset", "berlin-01").exit_code == 0
    store = open_registry(factory_lab.project)
    try:  # a reset box has no identity left: provisioning it again needs no flag
        assert store.get_device("berlin-01")["provisioning"] == "AWAITING_PROVISIONING"
    finally:
        store.close()
    second = tmp_path / "usb2"
    second.mkdir()
    usb = run_cli(root, "provision", "usb", "berlin-01", "--mount", str(second), "--force",
                  "--json", env=ENV)
    assert usb.exit_code == 0, usb.stderr
    assert json.loads(usb.stdout)["reused"] is True
    assert _issued(factory_lab, "berlin-01") == certificates  # no second certificate
    assert run_cli(root, "lab", "usb", "berlin-01", str(second)).exit_code == 0
    assert _reachable(factory_lab, "berlin-01")  # first answer with the new key settles it
    new_key = (factory_lab.layout("berlin-01").ssh_dir / "ssh_host_ed25519_key.pub").read_text()
    port = factory_lab.device("berlin-01").port
    assert _pins(factory_lab, "berlin-01") == [
        f"[127.0.0.1]:{port} {' '.join(new_key.split()[:2])}"]


def test_provision_all_again_keeps_a_box_that_booted_its_drive_reachable(
    factory_lab: Lab, tmp_path: Path
) -> None:
    """A real box provisions itself from its drive and nothing tells the controller: the
    registry still says AWAITING_PROVISIONING until `devices register`. Running
    `provision all` again in that window (say, for a new device) replaced the pinned
    host key the box now answers with: HOST KEY CHANGED on every later command."""
    root = factory_lab.project.root
    drive = tmp_path / "usb"
    drive.mkdir()
    assert run_cli(root, "provision", "usb", "berlin-01", "--mount", str(drive), "--force",
                   env=ENV).exit_code == 0
    factory_lab.stop("berlin-01")  # the box's own first boot, as on real hardware
    agent = Path(sys.executable).parent / "fleet-agent"
    booted = subprocess.run([str(agent), "provision", "--usb", str(drive)], text=True,
                            capture_output=True, timeout=120,
                            env={**os.environ, "FLEET_ROOT": str(factory_lab.root("berlin-01"))})
    assert booted.returncode == 0, booted.stdout + booted.stderr
    factory_lab.reboot("berlin-01")
    assert _reachable(factory_lab, "berlin-01")

    again = run_cli(root, "provision", "all", "-i", "lab", "--json", env=ENV)
    assert again.exit_code == 0, again.stderr
    assert _reachable(factory_lab, "berlin-01")
