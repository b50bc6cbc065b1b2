"""The controller's SHA-256 of the files it uploads, kept per version of a file (#19).

A bundle's hash is taken while `fleet firmware build` writes it and stays on the file
(an extended attribute), so no `fleet` process reads a bundle twice to upload it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from fleet import digests, firmware
from fleet.project import Project

REPO = Path(__file__).resolve().parents[1]
SECRET = b"correct-horse-battery"


@pytest.fixture(autouse=True)
def _fresh() -> None:
    digests.forget_all()  # another `fleet` process: only what is stored on the files counts


def _xattrs(path: Path) -> bool:
    try:
        os.setxattr(path, "user.edgefleet.probe", b"1")
    except OSError:
        return False
    return True


def test_a_built_bundle_carries_its_hash_to_the_next_process(tmp_path: Path) -> None:
    shutil.copytree(REPO / "firmware", tmp_path / "firmware")
    project = Project.locate(tmp_path)
    firmware.keygen(project, passphrase=SECRET)
    path = firmware.build(project, tmp_path / "firmware/lab-1.1.0.yaml", passphrase=SECRET).path
    if not _xattrs(path):
        pytest.skip("this file system keeps no user extended attributes")
    digests.forget_all()
    assert digests.remembered(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_stored_hash_counts_only_for_the_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"a" * 4096)
    if not _xattrs(path):
        pytest.skip("this file system keeps no user extended attributes")
    digests.remember(path, hashlib.sha256(b"a" * 4096).hexdigest())
    digests.forget_all()
    assert digests.remembered(path) == hashlib.sha256(b"a" * 4096).hexdigest()
    st = path.stat()
    path.write_bytes(b"b" * 4096)  # same size, same inode: a new version all the same
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert digests.remembered(path) is None


def test_forget_drops_both_copies(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"c" * 10)
    digests.remember(path, "0" * 64)
    digests.forget(path)
    assert digests.remembered(path) is None
    digests.forget_all()
    assert digests.remembered(path) is None
