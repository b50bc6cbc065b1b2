"""USB provisioning archives, controller side: build, sign, pin, verify.

The archive format and its verification live in ``fleet_runtime.provisioning``
(the device runs the same checks). Building an archive issues a device
certificate, generates the device's SSH host key and pins its public half in
``.fleet/known_hosts`` under ``[hostname]:port`` right away, so the controller
never trusts a device on first use; the registry then shows the device as
``AWAITING_PROVISIONING``.

>>> ca = pki.load_ca(project, passphrase)                                  # doctest: +SKIP
>>> report = build_archives(project, ca, specs, BuildSettings(out_dir))    # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from fleet_runtime import provisioning as fmt
from fleet_runtime.layout import atomic_write, fsync_dir
from fleet_runtime.provisioning import Archive, Expectations, ProvisioningError

from fleet import pki
from fleet.errors import ConfigError, FleetError, UsageError
from fleet.project import Project
from fleet.provisioning.records import RegistryRecorder, provisioned_devices
from fleet.transport import PENDING, known_hosts_name, pin_host_keys, pinned_lines

DEFAULT_VALID_FOR = "7d"
MAX_VALID_FOR = timedelta(days=90)
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
    atomic_write(path, data, mode, sync_dir=False)


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
