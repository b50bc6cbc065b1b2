"""USB provisioning archives, controller side: build, sign, pin, verify, write, wipe.

The archive format and its verification live in ``fleet_runtime.provisioning``
(the device runs the same checks). Building an archive issues a device
certificate, generates the device's SSH host key and pins its public half in
``.fleet/known_hosts`` under ``[hostname]:port`` right away, so the controller
never trusts a device on first use; the registry then shows the device as
``AWAITING_PROVISIONING``.

>>> ca = pki.load_ca(project, passphrase)                                  # doctest: +SKIP
>>> report = build_archives(project, ca, specs, BuildSettings(out_dir))    # doctest: +SKIP
>>> write_to_drive(report.built[0].path, Path("/media/usb"))               # doctest: +SKIP
"""

from __future__ import annotations

import errno
import json
import os
import queue
import re
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from fleet_runtime import provisioning as fmt
from fleet_runtime.layout import atomic_write, fsync_dir, read_json
from fleet_runtime.provisioning import Archive, Expectations, ProvisioningError

from fleet import pki
from fleet.errors import ConfigError, DeviceError, FleetError, UsageError
from fleet.project import Project
from fleet.transport import PENDING, known_hosts_name, pin_host_keys, pinned_lines

AWAITING_PROVISIONING, PROVISIONED = "AWAITING_PROVISIONING", "PROVISIONED"
DEFAULT_VALID_FOR = "7d"
MAX_VALID_FOR = timedelta(days=90)
LOG_RESERVE = 64 * 1024  # room left on the drive for the device's provisioning log
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class DeviceSpec:
    """One device as the inventory describes it."""

    name: str
    site: str
    hostname: str
    port: int = 22
    serial: str | None = None
    hardware: str | None = None
    arch: str | None = None
    network: dict[str, Any] | None = None

    @classmethod
    def from_host(cls, host: Any) -> DeviceSpec:
        """From a Nornir host (``fleet.inventory.select``)."""
        data = host.data
        return cls(
            name=host.name,
            site=str(data.get("site")),
            hostname=host.hostname or host.name,
            port=int(host.port or 22),
            serial=data.get("serial"),
            hardware=data.get("hardware"),
            arch=data.get("arch"),
            network=data.get("network"),
        )

    def checked_network(self) -> dict[str, Any]:
        """The network settings, validated; a bad one names the device and the field."""
        try:
            return fmt.validate_network(self.network if self.network is not None else {})
        except ProvisioningError as exc:
            raise ConfigError(
                exc.message.replace("network settings $", "$.data.network", 1),
                where=f"inventory host {self.name}",
                fix="correct data.network in the inventory",
            ) from None


def parse_duration(text: str) -> timedelta:
    """``"7d"`` -> 7 days; units s, m, h, d, w; at most 90 days."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text or "")
    if not match:
        raise UsageError(
            f"invalid duration '{text}'", fix="use a number and a unit: 30m, 12h, 7d, 2w"
        )
    value = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    if not timedelta(0) < value <= MAX_VALID_FOR:
        raise UsageError(f"duration '{text}' must be more than 0 and at most 90 days")
    return value


def check_name(name: str) -> str:
    try:
        return fmt.check_device_name(name)
    except ProvisioningError as exc:
        raise UsageError(exc.message) from None


@dataclass(frozen=True)
class BuildSettings:
    out_dir: Path
    valid_for: timedelta = timedelta(days=7)
    cert_days: int = pki.DEFAULT_DEVICE_DAYS
    now: datetime | None = None


@dataclass(frozen=True)
class BuiltArchive:
    spec: DeviceSpec
    path: Path
    sha256: str
    install_by: datetime
    host_key: str  # "ssh-ed25519 AAAA..."
    issued: pki.IssuedDevice
    replacing: bool = False  # a new identity for a provisioned device (--replace-identity)

    def summary(self) -> dict[str, Any]:
        return {
            "device": self.spec.name,
            "archive": str(self.path),
            "sha256": self.sha256,
            "install_by": fmt.utc_iso(self.install_by),
            "certificate": self.issued.fingerprint,
            "host_key": self.host_key.split()[0]
            + " pinned for "
            + known_hosts_name(self.spec.hostname, self.spec.port),
        }


@dataclass
class BuildReport:
    built: list[BuiltArchive] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # provisioned devices left alone
    registry: str = "registry"


SKIP_REASON = (
    "already provisioned: a new archive would replace its identity and host key "
    "(pass --replace-identity to do that)"
)


# ---------------------------------------------------------------- building


class ArchiveBuilder:
    """Everything one archive needs that is the same for every device of a run."""

    def __init__(
        self,
        project: Project,
        ca: pki.FleetCA,
        settings: BuildSettings,
        replacing: frozenset[str] = frozenset(),
    ) -> None:
        self.ca, self.settings, self.replacing = ca, settings, replacing
        self.controller_key = controller_public_key(project)
        self.release_keys = release_keys(project)
        self.mqtt = dict(project.config.get("mqtt") or {})
        self.now = settings.now or pki.now_utc()

    def members(
        self, spec: DeviceSpec, network: dict[str, Any]
    ) -> tuple[dict[str, bytes], pki.IssuedDevice, str]:
        issued = self.ca.issue_device(
            spec.name,
            serial=spec.serial,
            site=spec.site,
            days=self.settings.cert_days,
            now=self.now,
        )
        host_private, host_public = pki.ssh_host_key()
        members = {
            "device.json": _json(self.identity(spec)),
            "device.key": issued.key_pem,
            "device.crt": issued.cert_pem,
            "ca.crt": self.ca.cert_pem,
            "ssh_host_ed25519_key": host_private,
            "ssh_host_ed25519_key.pub": f"{host_public} root@{spec.name}\n".encode(),
            "authorized_keys": (self.controller_key + "\n").encode(),
            "network.json": _json(network),
            **{f"release-keys/{n}": data for n, data in self.release_keys.items()},
        }
        if self.mqtt.get("endpoint"):
            members[fmt.MQTT_MEMBER] = _json(self.mqtt_settings(spec))
        return members, issued, host_public

    def mqtt_settings(self, spec: DeviceSpec) -> dict[str, Any]:
        """The device's ``etc/fleet/mqtt.json`` without file paths (the agent adds its own)."""
        keys = ("mode", "endpoint", "port", "topic_prefix", "heartbeat_s")
        settings = {k: self.mqtt[k] for k in keys if self.mqtt.get(k) is not None}
        return {**settings, "thing_name": f"{self.mqtt.get('thing_prefix', '')}{spec.name}"}

    def identity(self, spec: DeviceSpec) -> dict[str, Any]:
        return {
            "name": spec.name,
            "serial": spec.serial,
            "site": spec.site,
            "hardware": spec.hardware,
            "arch": spec.arch,
            "mqtt": {
                "endpoint": self.mqtt.get("endpoint"),
                "port": self.mqtt.get("port", 8883),
                "thing_name": f"{self.mqtt.get('thing_prefix', '')}{spec.name}",
            },
        }

    def build(self, spec: DeviceSpec) -> BuiltArchive:
        """Issue, generate, sign and write one archive (0600); nothing is pinned yet."""
        network = spec.checked_network()
        members, issued, host_public = self.members(spec, network)
        install_by = self.now + self.settings.valid_for
        manifest = fmt.build_manifest(
            members,
            device=spec.name,
            serial=spec.serial,
            created_at=self.now,
            install_by=install_by,
            ca_fingerprint=self.ca.fingerprint,
        )
        data = zip_bytes({fmt.MANIFEST: manifest, fmt.SIGNATURE: self.ca.sign(manifest), **members})
        path = self.settings.out_dir / fmt.archive_name(spec.name)
        write_private(path, data)
        self.ca.save_certificate(issued)
        return BuiltArchive(
            spec, path, fmt.sha256_hex(data), install_by, host_public, issued,
            replacing=spec.name in self.replacing,
        )


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write a whole file (created `mode`, fsync'd) under a temporary name, then rename it.

    The caller fsyncs the directory once for a whole batch (see `build_archives`).
    """
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, sort_keys=True) + "\n").encode()  # C encoder: no indent


def zip_bytes(members: dict[str, bytes]) -> bytes:
    """A zip with manifest first, every member 0600 (stored: keys do not compress)."""
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o100600 << 16
            zf.writestr(info, data)
    return buffer.getvalue()


def release_keys(project: Project) -> dict[str, bytes]:
    """OTA release public keys the devices must trust (``certs/release/*.pub``)."""
    folder = project.certs / "release"
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.pub"))} if folder.is_dir() else {}


def controller_public_key(project: Project) -> str:
    """The controller's SSH public key line (the key is created on first use)."""
    from fleet.transport import controller_public_key as from_transport

    return from_transport(project)


def build_archives(
    project: Project,
    ca: pki.FleetCA,
    specs: Iterable[DeviceSpec],
    settings: BuildSettings,
    *,
    workers: int | None = None,
    on_done: Callable[[str, str | None], None] | None = None,
    replace_identity: bool = False,
) -> BuildReport:
    """Build one archive per device in parallel, then pin host keys, record certificates
    and mark the devices AWAITING_PROVISIONING. Every spec is checked before anything is built.

    Devices the registry knows as provisioned are skipped (`report.skipped`): re-pinning
    a running device's host key would lock the controller out of it. With
    `replace_identity` they get a new archive, and their new host key is pinned beside
    the old one until the device first answers with it (``fleet.transport.PENDING``).

    The registry is written by one thread of its own while archives are built (its
    commits wait on the disk, or on the cloud for the aws backend)."""
    specs = list(specs)
    check_specs(specs)
    report = BuildReport()
    provisioned = provisioned_devices(project, [s.name for s in specs])
    if not replace_identity:
        report.skipped = {name: SKIP_REASON for name in sorted(provisioned)}
        specs = [s for s in specs if s.name not in provisioned]
        if not specs:
            return report
    settings.out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    builder = ArchiveBuilder(project, ca, settings, frozenset(provisioned))
    recorder = RegistryRecorder(project)
    recorder.start()
    try:
        # Threads: fsync and much of OpenSSL run without the GIL.
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            for spec, outcome in zip(
                specs, pool.map(lambda s: _try_build(builder, s), specs), strict=True
            ):
                if isinstance(outcome, BuiltArchive):
                    report.built.append(outcome)
                    recorder.put(outcome)
                else:
                    report.failed[spec.name] = outcome
                if on_done:
                    on_done(spec.name, None if isinstance(outcome, BuiltArchive) else outcome)
        fsync_dir(settings.out_dir)
        _finalize(project, ca, report)
    finally:
        report.registry = recorder.finish()
    return report


def _try_build(builder: ArchiveBuilder, spec: DeviceSpec) -> BuiltArchive | str:
    try:
        return builder.build(spec)
    except (FleetError, OSError) as exc:
        return str(exc)


def check_specs(specs: list[DeviceSpec]) -> None:
    if not specs:
        raise UsageError("no devices to build archives for")
    seen: set[str] = set()
    for spec in specs:
        check_name(spec.name)
        if spec.name in seen:
            raise UsageError(f"device '{spec.name}' is listed twice")
        seen.add(spec.name)
        spec.checked_network()


def _finalize(project: Project, ca: pki.FleetCA, report: BuildReport) -> None:
    if not report.built:
        return
    for beside in (False, True):
        pins = {
            known_hosts_name(b.spec.hostname, b.spec.port): b.host_key
            for b in report.built
            if _beside(project, b) == beside
        }
        if pins:
            pin_host_keys(project.known_hosts, pins, beside=beside)
    ca.append_index([b.issued for b in report.built])


def _beside(project: Project, built: BuiltArchive) -> bool:
    """Pin the new host key beside the old one (pending) rather than in its place?

    Always for --replace-identity. Also when a key is already pinned for the host: the
    registry says AWAITING_PROVISIONING until `devices register`, but the box may have
    booted the earlier archive meanwhile and answer with that key; replacing it locked
    the controller out (HOST KEY CHANGED).
    """
    name = known_hosts_name(built.spec.hostname, built.spec.port)
    settled = [f for f in pinned_lines(project.known_hosts, name) if f[3:] != [PENDING]]
    return built.replacing or bool(settled)


def provisioned_devices(project: Project, names: list[str]) -> set[str]:
    """Those of `names` the registry knows as PROVISIONED (running with an identity)."""
    store = _registry(project)
    if store is None:
        doc = read_json(_fallback_path(project), default={}) or {}
        return {n for n in names if (doc.get(n) or {}).get("status") == PROVISIONED}
    try:
        found = store.list_devices(names=names)
    finally:
        store.close()
    return {str(r["name"]) for r in found if r.get("provisioning") == PROVISIONED}


# ---------------------------------------------------------------- registry


class RegistryRecorder:
    """Records built archives as AWAITING_PROVISIONING from one thread of its own.

    The store is opened, used and closed in that thread (SQLite connections stay
    in their thread). `finish` waits for it and raises the first error it met.
    """

    def __init__(self, project: Project) -> None:
        self.project = project
        self.queue: queue.SimpleQueue[BuiltArchive | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="registry", daemon=True)
        self.where = "registry"
        self.error: BaseException | None = None

    def start(self) -> None:
        self.thread.start()

    def put(self, built: BuiltArchive) -> None:
        self.queue.put(built)

    def finish(self) -> str:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise FleetError(
                f"archives were built, but the registry was not updated: {self.error}",
                fix="fix the registry and build the archives again",
            ) from self.error
        return self.where

    def _run(self) -> None:
        try:
            store = _registry(self.project)
        except BaseException as exc:  # noqa: BLE001  (reported by finish)
            self.error, store = exc, None
        try:
            while (built := self.queue.get()) is not None:
                if self.error is None:
                    self._record(store, built)
        finally:
            if store is not None:
                store.close()

    def _record(self, store: Any, built: BuiltArchive) -> None:
        try:
            if store is None:
                _record_fallback(
                    self.project, built.spec.name, AWAITING_PROVISIONING, built.issued.fingerprint
                )
                self.where = str(_fallback_path(self.project))
                return
            # one transaction per device: status and certificate ride the upsert; a device
            # getting a new identity runs on its old one until it boots with the archive
            status = PROVISIONED if built.replacing else AWAITING_PROVISIONING
            store.upsert_device(built.spec.name, **_registry_fields(built), provisioning=status)
            if store.backend != "sqlite":  # a cloud backend registers the certificate itself
                store.set_device_certificate(built.spec.name, built.issued.cert_pem.decode())
        except BaseException as exc:  # noqa: BLE001
            self.error = exc


def _registry_fields(b: BuiltArchive) -> dict[str, Any]:
    spec = b.spec
    fields = {
        "site": spec.site,
        "serial": spec.serial,
        "hardware": spec.hardware,
        "arch": spec.arch,
        "hostname": spec.hostname,
        "port": spec.port,
        "host_key_fingerprint": ssh_fingerprint(b.host_key),
        "cert_fingerprint": b.issued.fingerprint.removeprefix("sha256:"),
    }
    return {k: v for k, v in fields.items() if v is not None}


def ssh_fingerprint(public_line: str) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` prints it."""
    import base64
    import hashlib

    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def mark_provisioned(project: Project, name: str) -> str:
    store = _registry(project)
    if store is None:
        _record_fallback(project, name, PROVISIONED, None)
        return str(_fallback_path(project))
    try:
        store.set_device_status(name, PROVISIONED)
        store.set_device_status(name, "ONLINE")
    finally:
        store.close()
    return "registry"


def _registry(project: Project) -> Any:
    try:
        from fleet.registry import open_registry
    except ImportError:
        return None
    return open_registry(project)


def _fallback_path(project: Project) -> Path:
    return project.state_dir / "provisioning.json"


def _record_fallback(project: Project, name: str, status: str, cert: str | None) -> None:
    path = _fallback_path(project)
    doc = dict(read_json(path, default={}) or {})
    entry = {**doc.get(name, {}), "status": status, "at": pki.now_utc().isoformat()}
    if cert:
        entry["certificate"] = cert
    doc[name] = entry
    atomic_write(path, _json(doc), 0o600)


# ---------------------------------------------------------------- verification


def verify_file(project: Project, path: Path, *, now: datetime | None = None) -> Archive:
    """`fleet provision verify`: the device's checks, trusting this project's CA."""
    trusted = (
        (fmt.cert_fingerprint(pki.load_ca_cert(project)),)
        if pki.ca_paths(project).cert.exists()
        else ()
    )
    try:
        return fmt.verify_archive(path, Expectations(now=now or pki.now_utc(), trusted_ca=trusted))
    except ProvisioningError as exc:
        raise ConfigError(
            f"archive refused: {exc.code}: {exc.message}",
            where=str(path),
            fix="build a new one with `fleet provision archive`",
        ) from None
    except FileNotFoundError:
        raise ConfigError("no such archive", where=str(path)) from None


def reusable_archive(project: Project, spec: DeviceSpec, out_dir: Path) -> Path | None:
    """The archive built earlier for `spec` in `out_dir`, when it may still be used: it
    verifies (signature, deadline not passed), its certificate is not revoked and its
    host key is the one pinned for the device. `fleet provision usb` writes it again
    rather than issue the device a second certificate."""
    path = out_dir / fmt.archive_name(spec.name)
    if not path.is_file():
        return None
    try:
        archive = verify_file(project, path)
    except ConfigError:
        return None  # expired, or not this project's: build a new one
    _, revoked = pki.revoked_serials(project)
    cert = x509.load_pem_x509_certificate(archive.members["device.crt"])
    if archive.device != spec.name or format(cert.serial_number, "x") in revoked:
        return None
    host_key = archive.members["ssh_host_ed25519_key.pub"].decode().split()[:2]
    pinned = pinned_lines(project.known_hosts, known_hosts_name(spec.hostname, spec.port))
    return path if any(f[1:3] == host_key for f in pinned) else None


# ---------------------------------------------------------------- USB drive


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
    fd, tmp = tempfile.mkstemp(prefix=".edgefleet-", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
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


# ---------------------------------------------------------------- lab first boot


def lab_manufacture(project: Project, layout: Any, serial: str) -> None:
    """What the factory gives a lab box: its hardware serial and, when the project has a
    fleet CA, that CA's fingerprint pinned as the device's provisioning trust anchor."""
    atomic_write(layout.root / ".lab/hardware.json", _json({"serial": serial}), 0o644)
    ca = pki.ca_paths(project).cert
    if ca.exists():
        anchor = fmt.trust_anchor_path(layout)
        anchor.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(
            anchor, (fmt.cert_fingerprint(pki.load_ca_cert(project)) + "\n").encode(), 0o644
        )


def move_pin(known_hosts: Path, hostname: str, old_port: int, new_port: int) -> bool:
    """Carry the key pinned for ``[host]:old_port`` over to ``new_port``; True if it moved."""
    if old_port == new_port or not known_hosts.exists():
        return False
    old, new = known_hosts_name(hostname, old_port), known_hosts_name(hostname, new_port)
    keys = [f for f in pinned_lines(known_hosts, old) if f[0] == old]
    if not keys:
        return False
    settled = [f for f in keys if f[3:] != [PENDING]]  # a pending key moves along, still pending
    pin_host_keys(known_hosts, {new: " ".join((settled or keys)[-1][1:3])})
    pending = [f for f in keys if f[3:] == [PENDING]]
    if settled and pending:
        pin_host_keys(known_hosts, {new: " ".join(pending[-1][1:3])}, beside=True)
    return True


def lab_usb_boot(lab: Any, name: str, drive: Path) -> dict[str, Any]:
    """Insert `drive` into lab device `name` and power it on: the device's own first boot
    (``fleet-agent provision --usb``), then the boot logic and its SSH server."""
    dev = lab.device(name)
    if not drive.is_dir():
        raise UsageError(
            f"no such directory {drive}", fix="pass the folder that stands for the drive"
        )
    lab.stop(name)  # power off: the drive is read at power-on
    answer = _agent(lab, dev, ["provision", "--usb", str(drive.resolve())])
    if not answer.get("ok"):
        error = answer.get("error") or {}
        lab.start(name)
        raise DeviceError(
            f"{name}: first boot refused the drive: {error.get('code')}: {error.get('message')}",
            where=str(drive / fmt.LOG_DIR / fmt.LOG_NAME),
            fix="fix the cause, build a new archive and insert the drive again",
        )
    lab.reboot(name)
    answer["registry"] = mark_provisioned(lab.project, name)
    from fleet.broker import LabMqtt

    answer["mqtt"] = LabMqtt(lab.project).follow_provisioning(name, lab.root(name))
    return answer


def lab_factory_reset(lab: Any, name: str) -> dict[str, Any]:
    """Press the lab device's reset button: power off, ``fleet-agent reset`` (identity, keys,
    host key gone), manufacturing data written again (serial, this project's CA pinned)."""
    from fleet.broker import LabMqtt

    dev = lab.device(name)
    lab.stop(name)
    LabMqtt(lab.project).stop_daemon(name, lab.root(name))  # its identity is about to go
    answer = _agent(lab, dev, ["reset"])
    if not answer.get("ok"):
        error = answer.get("error") or {}
        raise DeviceError(f"{name}: reset failed: {error.get('code')}: {error.get('message')}")
    lab_manufacture(lab.project, lab.layout(name), dev.serial)
    _mark_factory(lab, name)
    answer["registry"] = mark_reset(lab.project, name)
    return answer


def mark_reset(project: Project, name: str) -> str | None:
    """A factory reset box has no identity: the registry shows it AWAITING_PROVISIONING
    again, so `fleet provision all` builds it a new archive without --replace-identity."""
    store = _registry(project)
    if store is None:
        return None
    try:
        if store.get_device(name) is None:
            return None
        store.set_device_status(name, AWAITING_PROVISIONING)
    finally:
        store.close()
    return "registry"


def _mark_factory(lab: Any, name: str) -> None:
    # A reset box has no host key of its own any more: the next one comes from an archive.
    lab.update(name, factory=True)


def _agent(lab: Any, dev: Any, args: list[str]) -> dict[str, Any]:
    from fleet.agent import local_agent

    return local_agent(lab.root(dev.name)).answer(*args)
