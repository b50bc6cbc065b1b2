"""The USB drive: write an archive to it (fsync, read back, compare), list and wipe ours.

>>> write_to_drive(Path("out/archives/berlin-01.edgefleet"), Path("/media/usb"))  # doctest: +SKIP
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from fleet_runtime import provisioning as fmt
from fleet_runtime.layout import atomic_write, fsync_dir

from fleet.errors import FleetError

LOG_RESERVE = 64 * 1024  # room left on the drive for the device's provisioning log


class DriveError(FleetError):
    """The drive cannot take the archive: not mounted, full, read-only, or it reads back wrong."""


@dataclass(frozen=True)
class DriveWrite:
    path: Path
    bytes: int
    sha256: str
    free_after: int


def check_drive(mount: Path, *, force: bool = False) -> None:
    if not mount.is_dir():
        raise DriveError(
            "no such directory",
            where=str(mount),
            fix="mount the USB drive and pass its mount point",
        )
    if not force and not os.path.ismount(mount):
        raise DriveError(
            "not a mount point",
            where=str(mount),
            fix="pass the drive's mount point, or --force to write into this directory",
        )
    if os.statvfs(mount).f_flag & os.ST_RDONLY:
        raise DriveError(
            "the drive is mounted read-only",
            where=str(mount),
            fix="remount it read-write (or flip the drive's lock switch)",
        )


def write_to_drive(
    archive: Path, mount: Path, *, force: bool = False, max_bytes: int | None = None
) -> DriveWrite:
    """Copy `archive` to the drive's root, fsync, then read it back and compare.

    Refused before writing when the drive is missing, read-only, not a mount
    point (unless `force`) or has less free space than the archive plus room
    for the device's log (`max_bytes` caps what we may use, for small drives).
    """
    check_drive(mount, force=force)
    data = archive.read_bytes()
    need = len(data) + LOG_RESERVE
    free = shutil.disk_usage(mount).free
    if max_bytes is not None:
        free = min(free, max_bytes)
    if free < need:
        raise DriveError(
            f"not enough space on the drive: {free} bytes free, {need} needed",
            where=str(mount),
            fix="free some space or use another drive",
        )
    target = mount / archive.name
    _copy_synced(data, target)
    back = target.read_bytes()
    if fmt.sha256_hex(back) != fmt.sha256_hex(data):
        target.unlink(missing_ok=True)
        raise DriveError(
            "the archive read back from the drive differs from what was written",
            where=str(target),
            fix="the drive may be failing: use another one",
        )
    return DriveWrite(target, len(data), fmt.sha256_hex(data), shutil.disk_usage(mount).free)


def _copy_synced(data: bytes, target: Path) -> None:
    try:  # the temp name is one `drive_files` finds, should the drive be pulled mid-write
        atomic_write(target, data, 0o600, chmod=False, prefix=".edgefleet-")
    except OSError as exc:
        raise _drive_error(exc, target) from None


def _drive_error(exc: OSError, target: Path) -> DriveError:
    if exc.errno == errno.ENOSPC:
        return DriveError(
            "the drive is full",
            where=str(target.parent),
            fix="free some space or use another drive",
        )
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return DriveError(
            "the drive is read-only", where=str(target.parent), fix="remount it read-write"
        )
    return DriveError(f"cannot write the archive: {exc.strerror}", where=str(target))


def drive_files(mount: Path) -> list[Path]:
    """Every edgefleet file on the drive: archives, leftovers, the log folder."""
    found = fmt.find_archives(mount) + sorted(mount.glob(".edgefleet-*.tmp"))
    log_dir = mount / fmt.LOG_DIR
    return found + ([log_dir] if log_dir.exists() else [])


def wipe_drive(mount: Path, *, force: bool = False) -> list[str]:
    """Remove every edgefleet file from the drive (archives are overwritten with zeros first)."""
    if not mount.is_dir():
        raise DriveError("no such directory", where=str(mount), fix="mount the USB drive")
    if not force and not os.path.ismount(mount):
        raise DriveError(
            "not a mount point", where=str(mount), fix="pass the drive's mount point, or --force"
        )
    removed = []
    for path in drive_files(mount):
        try:
            _remove(path)
        except OSError as exc:
            raise _drive_error(exc, path) from None
        removed.append(path.name)
    fsync_dir(mount)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
        return
    if path.is_file() and not path.is_symlink():
        # Best effort on flash (wear levelling keeps old blocks): say "format the drive" too.
        size = path.stat().st_size
        with open(path, "r+b") as fh:
            fh.write(b"\0" * size)
            fh.flush()
            os.fsync(fh.fileno())
    path.unlink()
