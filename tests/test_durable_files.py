"""The controller's private files go through the one durable-file toolkit.

`os.fsync` is watched (by inode) while a host key is pinned and a release key is made:
both the file and its directory must reach the disk before the call returns.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fleet import firmware
from fleet.project import Project
from fleet.transport import pin_host_key, unpin_host_key

PASSPHRASE = b"correct-horse-battery"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJQ2sF1V1zJk0h7JYdPcjDkO4sZz3QH2d1mN1yXgY3Fq"


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> set[int]:
    """Inodes of every file and directory fsync'd while the test runs."""
    inodes: set[int] = set()
    real_fsync = os.fsync

    def watching_fsync(fd: int) -> None:
        inodes.add(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", watching_fsync)
    return inodes


def test_a_pinned_host_key_and_its_directory_are_fsynced(
    tmp_path: Path, fsynced: set[int]
) -> None:
    known_hosts = tmp_path / ".fleet" / "known_hosts"
    known_hosts.parent.mkdir()
    pin_host_key(known_hosts, "10.0.0.7", 22, HOST_KEY)
    assert known_hosts.stat().st_ino in fsynced
    assert known_hosts.parent.stat().st_ino in fsynced
    assert stat.S_IMODE(known_hosts.stat().st_mode) == 0o600
    fsynced.clear()
    assert unpin_host_key(known_hosts, "10.0.0.7", 22)
    assert known_hosts.stat().st_ino in fsynced and known_hosts.parent.stat().st_ino in fsynced


def test_the_release_key_and_its_directory_are_fsynced(
    tmp_path: Path, fsynced: set[int]
) -> None:
    key = firmware.keygen(Project.locate(tmp_path), passphrase=PASSPHRASE)
    assert key.private.stat().st_ino in fsynced
    assert key.private.parent.stat().st_ino in fsynced
    assert stat.S_IMODE(key.private.stat().st_mode) == 0o600
    assert sorted(p.name for p in key.private.parent.iterdir()) == sorted(
        [key.private.name, key.public.name])  # no temp file left beside them


def test_a_damaged_log_bundle_leaves_nothing_in_the_export_folder(tmp_path: Path) -> None:
    from fleet.errors import DeviceError
    from fleet.logs import ExportOptions, store

    options = ExportOptions(out=tmp_path / "out", stamp="20260101T000000Z")
    with pytest.raises(DeviceError, match="run the export again"):
        store("cam-01", "berlin", b"not a tar.gz at all", options)
    assert list((tmp_path / "out" / "berlin").iterdir()) == []  # neither the bundle nor a temp
