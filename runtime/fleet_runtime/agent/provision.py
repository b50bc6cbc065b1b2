"""`fleet-agent provision --usb PATH` (first boot) and `fleet-agent reset`.

First boot finds this device's archive at the root of the drive, runs every
check of ``fleet_runtime.provisioning.verify_archive`` (zip safety, manifest
signature by a trusted CA, every SHA-256, deadline, serial), then installs
identity, host key, authorized key, network settings, CA and release keys
under FLEET_ROOT. Nothing is written before every check has passed; the
files are written atomically one by one with ``device.json`` last (it marks
the device provisioned), and a failure part-way puts back what was there.
Every step and the outcome go to ``edgefleet/provision.log`` on the drive, so
a failed provisioning can be diagnosed without a network (as Panorama did).
Secrets never reach the log.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

from fleet_runtime import __version__
from fleet_runtime.agent.protocol import AgentError, progress
from fleet_runtime.labhooks import check_disk_space
from fleet_runtime.layout import Layout, atomic_write, read_json

# The archive format (jsonschema, x509) is imported inside the commands: every other
# fleet-agent command builds this parser too and must stay quick to start.
LOG_DIR, LOG_NAME = "edgefleet", "provision.log"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "provision", help="first boot: install this device's identity from a USB drive"
    )
    p.add_argument("--usb", required=True, type=Path, help="mount point of the drive")
    p.set_defaults(handler=run)
    r = sub.add_parser("reset", help="forget this device's identity so it can be provisioned again")
    r.set_defaults(handler=reset)


class UsbLog:
    """Appends to ``<drive>/edgefleet/provision.log``; a read-only drive is noted, not fatal.

    Everything on the drive is the attacker's choice, the log's path included, and
    this runs as root before the archive is verified. So the log is opened through
    a descriptor of the drive's root with ``O_NOFOLLOW`` at every step: a linked
    ``edgefleet/`` or ``provision.log`` (pointing at, say, the trust anchor or
    ``authorized_keys``) is refused, as is anything but a plain file with one link.
    Every line is escaped so that no name can add a line of its own.
    """

    def __init__(self, drive: Path) -> None:
        self.path = drive / LOG_DIR / LOG_NAME
        self.written = True
        self.refused: str | None = None  # why the log was not written, when it was not

    def line(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            fd = _open_log(self.path.parent.parent)
        except OSError as exc:
            self.written, self.refused = False, exc.strerror or str(exc)
            return
        try:
            os.write(fd, f"{stamp} {_one_line(text)}\n".encode())
        except OSError as exc:
            self.written, self.refused = False, exc.strerror or str(exc)
        finally:
            os.close(fd)


_NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK


def _open_log(drive: Path) -> int:
    """A write descriptor for the drive's log, never through a link; raises OSError."""
    root = os.open(drive, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with contextlib.suppress(FileExistsError):  # a link there fails the open below
            os.mkdir(LOG_DIR, 0o755, dir_fd=root)
        folder = os.open(LOG_DIR, os.O_RDONLY | os.O_DIRECTORY | _NO_FOLLOW, dir_fd=root)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise OSError(exc.errno, f"{LOG_DIR}/ on the drive is a link or not a folder") from None
        raise
    finally:
        os.close(root)
    try:
        # O_NONBLOCK: a FIFO planted as the log must not hang the first boot.
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NO_FOLLOW
        fd = os.open(LOG_NAME, flags, 0o644, dir_fd=folder)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(exc.errno, f"{LOG_NAME} on the drive is a link") from None
        raise
    finally:
        os.close(folder)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)  # a device node, or a hard link to a file elsewhere
        raise OSError(errno.EPERM, "not a plain file with a single link", LOG_NAME)
    return fd


def _one_line(text: str) -> str:
    # Messages quote archive contents (serials, schema errors): no control character
    # may reach the file raw, so one call always writes exactly one line.
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def run(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    from fleet_runtime import provisioning as fmt

    log = UsbLog(args.usb)
    log.line(f"first boot: fleet-agent {__version__}, drive {fmt.printable(str(args.usb))}")
    try:
        result = provision(layout, args.usb, log)
    except fmt.ProvisioningError as exc:
        log.line(f"REFUSED {exc.code}: {exc.message}; nothing was changed on the device")
        raise AgentError(exc.code, exc.message) from None
    except OSError as exc:
        what = f"{exc.strerror or exc} ({exc.filename or 'no file'})"
        log.line(f"FAILED os-error: {what}; the device was left as it was")
        raise AgentError("os-error", what) from None
    log.line(f"PROVISIONED as {result['device']}; remove the drive and wipe it (it holds secrets)")
    answer = {**result, "log": str(log.path), "log_written": log.written}
    if log.refused:
        answer["log_problem"] = log.refused  # e.g. a link planted on the drive
    return answer


def provision(layout: Layout, drive: Path, log: UsbLog) -> dict[str, Any]:
    """Verify the drive's archive for this device and install it. Raises ProvisioningError."""
    from fleet_runtime import provisioning as fmt

    _refuse_if_provisioned(layout)
    expect = fmt.Expectations(
        serial=fmt.hardware_serial(layout), trusted_ca=fmt.trusted_fingerprints(layout)
    )
    anchors = len(expect.trusted_ca)
    trust = f"pinned ({anchors})" if anchors else "not pinned: physical presence"
    log.line(f"device serial {fmt.printable(expect.serial or 'unknown')}; trusted CA {trust}")
    path = choose_archive(drive, expect.serial)
    shown = fmt.printable(path.name)  # the drive chose the name: never write it raw
    log.line(f"archive {shown}: verifying")
    progress("verify", archive=path.name)
    archive = fmt.verify_archive(path, expect)
    log.line(
        f"archive {shown}: signature, {len(archive.members) - 2} member hashes, "
        f"deadline {archive.manifest['install_by']} and serial checked; sha256 {archive.sha256}"
    )
    record = {
        "at": fmt.utc_iso(expect.now),
        "archive": path.name,
        "archive_sha256": archive.sha256,
        "ca_fingerprint": archive.manifest["ca_fingerprint"],
        "trust": archive.trust,
        "install_by": archive.manifest["install_by"],
        "agent_version": __version__,
    }
    progress("install", device=archive.device)
    check_disk_space(layout)
    installed = apply(fmt.install_plan(layout, archive, record))
    log.line(f"installed {len(installed)} files under {layout.etc}")
    return {
        "device": archive.device,
        "serial": archive.manifest.get("serial"),
        "trust": archive.trust,
        "ca_fingerprint": record["ca_fingerprint"],
        "installed": [str(p.relative_to(layout.root)) for p in installed],
    }


def _refuse_if_provisioned(layout: Layout) -> None:
    from fleet_runtime import provisioning as fmt

    current = read_json(layout.device_json, default=None)
    if current is not None:
        raise fmt.ProvisioningError(
            "already-provisioned",
            f"this device is already provisioned as "
            f"{current.get('name')!r}; run `fleet-agent reset` before provisioning it again",
        )


def choose_archive(drive: Path, serial: str | None) -> Path:
    """The archive on the drive meant for this device (by serial when there are several)."""
    from fleet_runtime import provisioning as fmt

    if not drive.is_dir():
        raise fmt.ProvisioningError("no-drive", f"{drive} is not a mounted drive")
    found = fmt.find_archives(drive)
    if not found:
        raise fmt.ProvisioningError(
            "not-found", f"no {fmt.ARCHIVE_PREFIX}*{fmt.ARCHIVE_SUFFIX} at the root of {drive}"
        )
    if len(found) == 1:
        return found[0]
    mine = [p for p in found if serial and _manifest_serial(p) == serial]
    if len(mine) == 1:
        return mine[0]
    raise fmt.ProvisioningError(
        "ambiguous",
        f"{len(found)} archives on the drive and none is marked for serial "
        f"{serial or '(unknown)'}; leave only this device's archive on the drive",
    )


def _manifest_serial(path: Path) -> str | None:
    from fleet_runtime import provisioning as fmt

    try:
        _, members = fmt.read_archive(path)
        manifest = json.loads(members[fmt.MANIFEST])
    except (fmt.ProvisioningError, KeyError, ValueError, OSError):
        return None
    serial = manifest.get("serial") if isinstance(manifest, dict) else None  # the drive's choice
    return str(serial) if serial is not None else None


def apply(plan: list[tuple[Path, bytes, int]]) -> list[Path]:
    """Write every file atomically, in order; on failure restore what was there before."""
    before = {path: path.read_bytes() if path.is_file() else None for path, _, _ in plan}
    written: list[Path] = []
    try:
        for path, data, mode in plan:
            atomic_write(path, data, mode)
            written.append(path)
    except OSError:
        for path in reversed(written):
            old = before[path]
            if old is None:
                path.unlink(missing_ok=True)
            else:
                atomic_write(path, old, 0o600)
        raise
    return written


def reset(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    """Remove identity, keys, host key and network settings; software and trust anchor stay."""
    from fleet_runtime import provisioning as fmt

    current = read_json(layout.device_json, default=None) or {}
    removed = []
    for path in fmt.identity_paths(layout):  # device.json first: the device is unprovisioned
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(str(path.relative_to(layout.root)))
    return {"reset": True, "was": current.get("name"), "removed": removed}
