"""provision.archive and provision.usb against a factory lab site: check mode writes no
archive and no drive file, and names the very paths the real run then writes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from labkit import CALM_HEALTH, default_ssh_kind, require_ssh
from opkit import call

from fleet import pki
from fleet.errors import ConfigError
from fleet.lab import Lab
from fleet.lab.usb import lab_usb_boot
from fleet.project import Project

PASSPHRASE = "ca-pass-for-the-play"


@pytest.fixture(scope="module")
def factory_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("factory")
    (root / "fleet.yaml").write_text(CALM_HEALTH)
    project = Project.locate(root)
    pki.init_ca(project, org="Acme", key_type="ec-p256", passphrase=PASSPHRASE.encode())
    ssh = default_ssh_kind()
    require_ssh(ssh)
    lab = Lab(project)
    lab.up(1, 2, ssh=ssh, factory=True)
    yield lab
    lab.down()


def test_archive_check_writes_nothing_and_names_what_the_build_writes(factory_lab, monkeypatch):
    monkeypatch.setenv(pki.PASSPHRASE_ENV, PASSPHRASE)
    predicted = call(factory_lab, "provision.archive", "berlin-01", check=True)
    path = Path(predicted.diff["archive"]["after"])
    assert predicted.changed and not path.exists()
    built = call(factory_lab, "provision.archive", "berlin-01")
    assert built.changed and not built.failed, built.msg
    assert built.diff == predicted.diff and path.is_file()
    assert set(built.data) == {"archive", "sha256"}
    again = call(factory_lab, "provision.archive", "berlin-01", check=True)
    assert not again.changed and "unexpired archive" in again.msg


def test_archive_without_the_ca_passphrase_fails_in_one_line(factory_lab, monkeypatch):
    monkeypatch.delenv(pki.PASSPHRASE_ENV, raising=False)
    assert call(factory_lab, "provision.archive", "berlin-02", check=True).changed
    with pytest.raises(ConfigError, match="FLEET_CA_PASSPHRASE"):
        call(factory_lab, "provision.archive", "berlin-02")


def test_usb_then_first_boot_then_register_brings_the_box_online(factory_lab, monkeypatch,
                                                                  tmp_path):
    monkeypatch.setenv(pki.PASSPHRASE_ENV, PASSPHRASE)
    drive = tmp_path / "drive"
    drive.mkdir()
    predicted = call(factory_lab, "provision.usb", "berlin-02", check=True, mount=str(drive),
                     force=True)
    assert predicted.changed and list(drive.iterdir()) == []
    written = call(factory_lab, "provision.usb", "berlin-02", mount=str(drive), force=True)
    assert written.diff == predicted.diff, written.msg
    assert Path(written.data["path"]).is_file() and PASSPHRASE not in repr(written)

    lab_usb_boot(factory_lab, "berlin-02", drive)  # the technician plugs the drive in
    back = call(factory_lab, "wait_for", "berlin-02", timeout=60.0)
    assert not back.failed, back.msg
    registered = call(factory_lab, "devices.register", "berlin-02")
    assert registered.data["status"] == "ONLINE", registered
    left = call(factory_lab, "provision.archive", "berlin-02", check=True)
    assert not left.changed and "already provisioned" in left.msg
