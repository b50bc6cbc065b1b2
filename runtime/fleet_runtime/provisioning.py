"""USB provisioning archives: the format, safe reading and verification (both halves).

The controller builds archives with these names and signs ``manifest.json``
(``fleet/provisioning.py``); the device verifies them on first boot
(``fleet-agent provision --usb``) and ``fleet provision verify`` runs the very
same checks. One archive per device, ``edgefleet-<device>.zip`` at the root of
the drive:

    manifest.json             format, device, serial, deadline, CA fingerprint,
                              SHA-256 + size of every other member
    manifest.sig              signature of manifest.json's bytes by the fleet CA key
    device.json               name, serial, site, hardware, arch, mqtt endpoint/thing
    device.key / device.crt   TLS client identity (issued by the fleet CA)
    ca.crt                    the fleet CA certificate
    ssh_host_ed25519_key(.pub) the device's SSH host key (public half pinned by the controller)
    authorized_keys           the controller's SSH public key
    network.json              eth0/eth1 dhcp|static, up to 5 NTP servers
    release-keys/<name>       OTA release public keys (optional)

Trust decision: what lets a factory-fresh device believe an archive?

* Verifying the signature against the ``ca.crt`` *inside* the archive alone
  proves only that the archive is internally consistent: it catches corruption
  and a tampered or swapped member (the signature no longer matches), but not
  an attacker who builds a whole archive with their own CA.
* So a device trusts a CA by fingerprint pinned outside the archive: the
  SHA-256 of the fleet CA certificate, written at manufacturing or staging to
  ``etc/fleet/trust/fleet-ca.sha256`` (one ``sha256:<64 hex>`` per line, so
  a CA can be rotated; any other byte in the file refuses every archive,
  ``bad-anchor``). When that anchor exists, an archive from any other CA is
  refused (``untrusted-ca``): this covers substitution by someone holding the
  drive or the box. Reset keeps the anchor.
* The drive is hostile before it is verified: the only thing the device
  writes there, ``edgefleet/provision.log``, is opened without following
  links, and names taken from the drive are escaped (``printable``).
* A device with no anchor (a box bought off the shelf) accepts the archive's CA
  on physical presence: whoever can plug a drive into the box is already
  trusted to provision it, as with Panorama. The device records
  ``trust: "physical-presence"`` and the CA fingerprint, and installs that CA.
  Signature and hashes still catch tampering in transit; they cannot catch a
  wholly forged drive, which is what the anchor is for.
* The install-by deadline bounds how long a lost or copied drive is useful;
  the expected serial (when the inventory knows it) stops an archive meant for
  one box from provisioning another; the controller pinned the host key at
  build time, so even a box provisioned from a forged drive cannot
  impersonate the real device to the controller.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import re
import stat
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from fleet_runtime import labhooks
from fleet_runtime.layout import Layout

FORMAT, FORMAT_VERSION = "edgefleet-provisioning", 1
ARCHIVE_PREFIX, ARCHIVE_SUFFIX = "edgefleet-", ".zip"
LOG_DIR, LOG_NAME = "edgefleet", "provision.log"
MANIFEST, SIGNATURE = "manifest.json", "manifest.sig"
REQUIRED_MEMBERS = (
    "device.json",
    "device.key",
    "device.crt",
    "ca.crt",
    "ssh_host_ed25519_key",
    "ssh_host_ed25519_key.pub",
    "authorized_keys",
    "network.json",
)
MQTT_MEMBER = "mqtt.json"  # optional: present when the fleet has an MQTT endpoint
RELEASE_KEY_RE = re.compile(r"^release-keys/[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")
DEVICE_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}\Z")
# Names of roles, never of devices: a device certificate must not look like the controller's
# (CN = device name on the broker), whatever the broker's ACL says.
RESERVED_NAMES = frozenset({"controller", "broker", "localhost", "edgefleet"})
MAX_ARCHIVE_BYTES = 4 * 1024 * 1024
MAX_MEMBER_BYTES = 256 * 1024
MAX_TOTAL_BYTES = 2 * 1024 * 1024
MAX_MEMBERS = 64
MAX_NTP = 5


class ProvisioningError(Exception):
    """An archive or setting that must be refused; ``code`` is stable, ``message`` one line."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


# ---------------------------------------------------------------- names and files


def archive_name(device: str) -> str:
    """``edgefleet-<device>.zip``, the file name on the drive."""
    check_device_name(device)
    return f"{ARCHIVE_PREFIX}{device}{ARCHIVE_SUFFIX}"


def check_device_name(name: str) -> str:
    """Panorama's rule: ``A-Z a-z 0-9 _ -``, 1 to 255 characters, and not a role's name."""
    if not isinstance(name, str) or not DEVICE_NAME_RE.match(name):
        raise ProvisioningError(
            "bad-name", f"invalid device name {name!r}: use A-Z a-z 0-9 _ - (1 to 255 characters)"
        )
    if name.lower() in RESERVED_NAMES:
        raise ProvisioningError(
            "bad-name",
            f"device name {name!r} is reserved for the fleet's own services "
            f"({', '.join(sorted(RESERVED_NAMES))}); choose another name",
        )
    return name


def find_archives(drive: Path) -> list[Path]:
    """Archives at the root of a mounted drive, sorted by name."""
    return sorted(
        p for p in drive.glob(f"{ARCHIVE_PREFIX}*{ARCHIVE_SUFFIX}") if p.is_file() or p.is_symlink()
    )


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cert_fingerprint(cert: x509.Certificate) -> str:
    """``sha256:<hex>`` of the certificate's DER encoding."""
    return "sha256:" + cert.fingerprint(hashes.SHA256()).hex()


def utc_iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).replace(microsecond=0).isoformat()


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (UTC when it names no zone); ProvisioningError when it is not one."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, AttributeError) as exc:
        raise ProvisioningError("bad-archive", f"{text!r} is not an ISO 8601 time") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


# ---------------------------------------------------------------- network settings

_IFACE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["mode"],
    "properties": {
        "mode": {"enum": ["dhcp", "static"]},
        "address": {"type": "string"},
        "mask": {"type": ["string", "integer"]},
        "gateway": {"type": "string"},
        "dns": {"type": "array", "maxItems": 3, "items": {"type": "string"}},
    },
    "if": {"properties": {"mode": {"const": "static"}}},
    "then": {"required": ["address", "mask"]},
    "else": {
        "not": {
            "anyOf": [{"required": ["address"]}, {"required": ["mask"]}, {"required": ["gateway"]}]
        }
    },
}
NETWORK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "eth0": _IFACE,
        "eth1": _IFACE,
        "ntp": {
            "type": "array",
            "maxItems": MAX_NTP,
            "uniqueItems": True,
            "items": {"type": "string", "pattern": r"^[A-Za-z0-9.:-]{1,253}\Z"},
        },
    },
}
DEFAULT_NETWORK: dict[str, Any] = {"eth0": {"mode": "dhcp"}, "eth1": {"mode": "dhcp"}, "ntp": []}


def validate_network(doc: Any) -> dict[str, Any]:
    """Check network settings (schema, then addresses); return them with defaults filled.

    >>> validate_network({"eth0": {"mode": "static", "address": "10.0.0.5",
    ...     "mask": "255.255.255.0", "gateway": "10.0.0.1"}})["eth1"]
    {'mode': 'dhcp'}
    """
    import jsonschema  # here, not at the top: `fleet health` imports this module (#19)

    errors = sorted(
        jsonschema.Draft202012Validator(NETWORK_SCHEMA).iter_errors(doc),
        key=lambda e: list(map(str, e.absolute_path)),
    )
    if errors:
        where = "$" + "".join(f".{p}" for p in errors[0].absolute_path)
        raise ProvisioningError("bad-network", f"network settings {where}: {errors[0].message}")
    out = {**DEFAULT_NETWORK, **doc}
    for port in ("eth0", "eth1"):
        if out[port]["mode"] == "static":
            _check_static(port, out[port])
    return out


def _ip(port: str, key: str, text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ProvisioningError(
            "bad-network", f"network settings $.{port}.{key}: {text!r} is not an IP address"
        ) from None


def _interface(port: str, cfg: dict[str, Any]) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    address = _ip(port, "address", cfg["address"])
    try:
        return ipaddress.ip_interface(f"{address}/{cfg['mask']}")
    except ValueError:
        raise ProvisioningError(
            "bad-network",
            f"network settings $.{port}.mask: {cfg['mask']!r} is not a valid mask "
            f"for {address} (use 255.255.255.0 or 24)",
        ) from None


def _check_static(port: str, cfg: dict[str, Any]) -> None:
    iface = _interface(port, cfg)
    net = iface.network
    if net.num_addresses > 2 and iface.ip in (net.network_address, net.broadcast_address):
        raise ProvisioningError(
            "bad-network",
            f"network settings $.{port}.address: {iface.ip} is the network or "
            f"broadcast address of {net}",
        )
    if "gateway" in cfg:
        gateway = _ip(port, "gateway", cfg["gateway"])
        if gateway not in net or gateway == iface.ip:
            raise ProvisioningError(
                "bad-network",
                f"network settings $.{port}.gateway: {gateway} is not another host on {net}",
            )
    for i, server in enumerate(cfg.get("dns", [])):
        _ip(port, f"dns[{i}]", server)


# ---------------------------------------------------------------- signatures


def _hash_for(key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> hashes.HashAlgorithm:
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def sign_bytes(private_key: Any, data: bytes) -> bytes:
    """Sign with the fleet CA key: ECDSA (SHA-256, SHA-384 on P-384) or RSA PKCS#1 v1.5."""
    algo = _hash_for(private_key.public_key())
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(data, ec.ECDSA(algo))
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(data, padding.PKCS1v15(), algo)
    raise TypeError(f"unsupported CA key type {type(private_key).__name__}")


def verify_bytes(public_key: Any, data: bytes, signature: bytes) -> bool:
    """True when `signature` is the CA's signature of `data` (never raises for a bad one)."""
    algo = _hash_for(public_key)
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(algo))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), algo)
        else:
            return False
    except InvalidSignature:
        return False
    return True


# ---------------------------------------------------------------- manifest

MANIFEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "format",
        "version",
        "device",
        "created_at",
        "install_by",
        "ca_fingerprint",
        "members",
    ],
    "properties": {
        "format": {"const": FORMAT},
        "version": {"const": FORMAT_VERSION},
        "device": {"type": "string", "pattern": DEVICE_NAME_RE.pattern},
        "serial": {"type": ["string", "null"]},
        "created_at": {"type": "string"},
        "install_by": {"type": "string"},
        "ca_fingerprint": {"type": "string", "pattern": r"^sha256:[0-9a-f]{64}\Z"},
        "members": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["sha256", "size"],
                "properties": {
                    "sha256": {"type": "string", "pattern": r"^[0-9a-f]{64}\Z"},
                    "size": {"type": "integer", "minimum": 0},
                },
            },
        },
    },
}


def build_manifest(
    members: dict[str, bytes],
    *,
    device: str,
    serial: str | None,
    created_at: datetime,
    install_by: datetime,
    ca_fingerprint: str,
) -> bytes:
    """``manifest.json`` bytes (canonical: sorted keys) for the given members."""
    doc = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "device": device,
        "serial": serial,
        "created_at": utc_iso(created_at),
        "install_by": utc_iso(install_by),
        "ca_fingerprint": ca_fingerprint,
        "members": {
            name: {"sha256": sha256_hex(data), "size": len(data)}
            for name, data in sorted(members.items())
        },
    }
    return json.dumps(doc, sort_keys=True).encode()  # canonical, one line (C encoder)


# ---------------------------------------------------------------- safe reading


def _allowed(name: str) -> bool:
    return (
        name in REQUIRED_MEMBERS
        or name == MQTT_MEMBER
        or name in (MANIFEST, SIGNATURE)
        or bool(RELEASE_KEY_RE.match(name))
    )


def _check_entry(info: zipfile.ZipInfo, seen: set[str]) -> None:
    name, shown = info.filename, printable(info.filename)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise ProvisioningError("unsafe-archive", f"member {shown} has an absolute path")
    if ".." in re.split(r"[\\/]", name):
        raise ProvisioningError("unsafe-archive", f"member {shown} escapes the archive (../)")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ProvisioningError("unsafe-archive", f"member {shown} is a symbolic link")
    if name in seen:
        raise ProvisioningError("unsafe-archive", f"member {shown} appears more than once")
    if not _allowed(name):
        raise ProvisioningError("unsafe-archive", f"unexpected member {shown}")
    if info.file_size > MAX_MEMBER_BYTES:
        raise ProvisioningError(
            "unsafe-archive",
            f"member {shown} declares {info.file_size} bytes (limit {MAX_MEMBER_BYTES})",
        )
    seen.add(name)


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    # Never trust the declared size: read at most one byte past the limit.
    shown = printable(info.filename)
    try:
        with zf.open(info) as fh:
            data = fh.read(MAX_MEMBER_BYTES + 1)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, EOFError) as exc:
        raise ProvisioningError("bad-archive", f"member {shown} is unreadable: {exc}") from None
    if len(data) > MAX_MEMBER_BYTES:
        raise ProvisioningError(
            "unsafe-archive", f"member {shown} inflates past {MAX_MEMBER_BYTES} bytes"
        )
    return data


def read_archive(path: Path) -> tuple[bytes, dict[str, bytes]]:
    """The archive's bytes and every member, refusing anything unsafe or unexpected."""
    shown = printable(path.name)  # the name is the drive's choice, like everything on it
    if path.is_symlink():
        raise ProvisioningError("unsafe-archive", f"{shown} is a symbolic link")
    if not path.is_file():
        raise ProvisioningError("not-found", f"no archive at {path}")
    size = path.stat().st_size
    if size > MAX_ARCHIVE_BYTES:
        raise ProvisioningError(
            "unsafe-archive", f"{shown} is {size} bytes (limit {MAX_ARCHIVE_BYTES})"
        )
    raw = path.read_bytes()
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            return raw, _read_all(zf)
    except zipfile.BadZipFile as exc:
        raise ProvisioningError("bad-archive", f"{shown} is not a zip archive: {exc}") from None


def _read_all(zf: zipfile.ZipFile) -> dict[str, bytes]:
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ProvisioningError("unsafe-archive", f"{len(infos)} members (limit {MAX_MEMBERS})")
    seen: set[str] = set()
    for info in infos:
        _check_entry(info, seen)
    members, total = {}, 0
    for info in infos:
        members[info.filename] = data = _read_member(zf, info)
        total += len(data)
        if total > MAX_TOTAL_BYTES:
            raise ProvisioningError(
                "unsafe-archive", f"members inflate past {MAX_TOTAL_BYTES} bytes"
            )
    return members


# ---------------------------------------------------------------- verification


@dataclass(frozen=True)
class Expectations:
    """What the verifier knows independently of the archive."""

    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    trusted_ca: tuple[str, ...] = ()  # pinned CA fingerprints; empty: physical presence
    serial: str | None = None  # this box's hardware serial, when known
    device: str | None = None  # the device name the caller expects, when known


@dataclass(frozen=True)
class Archive:
    """A verified archive: parsed manifest, members, and how its CA came to be trusted."""

    manifest: dict[str, Any]
    members: dict[str, bytes]
    sha256: str
    trust: str
    network: dict[str, Any]

    @property
    def device(self) -> str:
        return str(self.manifest["device"])

    @property
    def identity(self) -> dict[str, Any]:
        return dict(json.loads(self.members["device.json"]))


def verify_archive(path: Path, expect: Expectations | None = None) -> Archive:
    """Run every check on the archive at `path`; raise ProvisioningError on the first failure.

    Structure and zip safety, manifest and its signature by a trusted CA, every
    member's SHA-256, the device certificate and keys, network settings, then
    deadline, device name and serial.

    >>> verify_archive(Path("/media/usb/edgefleet-cam-01.zip"))   # doctest: +SKIP
    """
    expect = expect or Expectations()
    raw, members = read_archive(path)
    manifest, ca = _check_signed(members, expect)
    _check_hashes(manifest, members)
    _check_identity(manifest, members, ca)
    network = validate_network(_json_member(members, "network.json"))
    if MQTT_MEMBER in members:
        _check_mqtt(_json_member(members, MQTT_MEMBER))
    _check_expectations(manifest, expect)
    trust = "pinned" if expect.trusted_ca else "physical-presence"
    return Archive(manifest, members, sha256_hex(raw), trust, network)


def _json_member(members: dict[str, bytes], name: str) -> Any:
    try:
        return json.loads(members[name])
    except (KeyError, ValueError):
        raise ProvisioningError("bad-archive", f"{name} is missing or not JSON") from None


MQTT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["endpoint"],
    "properties": {
        "mode": {"enum": ["broker", "iot-core"]},
        "endpoint": {"type": "string", "minLength": 1, "maxLength": 253},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "topic_prefix": {"type": "string"},
        "heartbeat_s": {"type": "number", "exclusiveMinimum": 0},
        "thing_name": {"type": "string"},
    },
    "not": {"anyOf": [{"required": ["cert"]}, {"required": ["key"]}, {"required": ["ca"]}]},
}


def _check_mqtt(doc: Any) -> None:
    # File paths are the device's business: the agent adds cert/key/ca at install time.
    import jsonschema

    errors = list(jsonschema.Draft202012Validator(MQTT_SCHEMA).iter_errors(doc))
    if errors:
        raise ProvisioningError("bad-archive", f"{MQTT_MEMBER}: {errors[0].message}")


def _check_signed(
    members: dict[str, bytes], expect: Expectations
) -> tuple[dict[str, Any], x509.Certificate]:
    if MANIFEST not in members:
        raise ProvisioningError("bad-manifest", f"{MANIFEST} is missing")
    if SIGNATURE not in members:
        raise ProvisioningError("bad-manifest", f"{SIGNATURE} is missing")
    manifest = _json_member(members, MANIFEST)
    import jsonschema

    errors = list(jsonschema.Draft202012Validator(MANIFEST_SCHEMA).iter_errors(manifest))
    if errors:
        raise ProvisioningError("bad-manifest", f"{MANIFEST}: {errors[0].message}")
    ca = _load_cert(members, "ca.crt")
    fingerprint = cert_fingerprint(ca)
    if expect.trusted_ca and fingerprint not in expect.trusted_ca:
        raise ProvisioningError(
            "untrusted-ca",
            f"archive CA {fingerprint[:23]}... is not the fleet CA this device trusts",
        )
    if manifest["ca_fingerprint"] != fingerprint:
        raise ProvisioningError("bad-signature", "manifest names a different CA than ca.crt")
    if not verify_bytes(ca.public_key(), members[MANIFEST], members[SIGNATURE]):
        raise ProvisioningError("bad-signature", f"{MANIFEST} is not signed by the archive's CA")
    return manifest, ca


def _load_cert(members: dict[str, bytes], name: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(members[name])
    except (KeyError, ValueError):
        raise ProvisioningError(
            "bad-archive", f"{name} is missing or not a PEM certificate"
        ) from None


def _check_hashes(manifest: dict[str, Any], members: dict[str, bytes]) -> None:
    listed = set(manifest["members"])
    present = set(members) - {MANIFEST, SIGNATURE}
    missing, extra = sorted(listed - present), sorted(present - listed)
    if missing or extra:
        raise ProvisioningError(
            "tampered", f"members differ from the manifest (missing {missing}, unlisted {extra})"
        )
    for name in sorted(listed):
        entry, data = manifest["members"][name], members[name]
        if len(data) != entry["size"] or sha256_hex(data) != entry["sha256"]:
            raise ProvisioningError(
                "tampered", f"{name} does not match its SHA-256 in the manifest"
            )
    for name in REQUIRED_MEMBERS:
        if name not in members:
            raise ProvisioningError("bad-archive", f"required member {name} is missing")


def _check_identity(
    manifest: dict[str, Any], members: dict[str, bytes], ca: x509.Certificate
) -> None:
    device = manifest["device"]
    identity = _json_member(members, "device.json")
    if identity.get("name") != device:
        raise ProvisioningError(
            "bad-archive", "device.json names a different device than the manifest"
        )
    cert = _load_cert(members, "device.crt")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise ProvisioningError(
            "bad-signature", "device.crt is not issued by the archive's CA"
        ) from None
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if not cn or cn[0].value != device:
        raise ProvisioningError("bad-archive", f"device.crt is not for {device}")
    _check_key_pair(members, cert)


def _check_key_pair(members: dict[str, bytes], cert: x509.Certificate) -> None:
    try:
        key = serialization.load_pem_private_key(members["device.key"], password=None)
        host = serialization.load_ssh_private_key(members["ssh_host_ed25519_key"], password=None)
        host_pub = serialization.load_ssh_public_key(members["ssh_host_ed25519_key.pub"])
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ProvisioningError("bad-archive", "a key in the archive is unreadable") from None
    pem = serialization.Encoding.PEM
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(pem, spki) != cert.public_key().public_bytes(pem, spki):
        raise ProvisioningError("bad-archive", "device.key does not match device.crt")
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    if (
        not isinstance(host, ed25519.Ed25519PrivateKey)
        or not isinstance(host_pub, ed25519.Ed25519PublicKey)
        or host.public_key().public_bytes(*raw) != host_pub.public_bytes(*raw)
    ):
        raise ProvisioningError("bad-archive", "the SSH host key pair does not match")


def _check_expectations(manifest: dict[str, Any], expect: Expectations) -> None:
    deadline = parse_time(manifest["install_by"])
    if expect.now > deadline:
        raise ProvisioningError(
            "expired", f"archive had to be installed by {utc_iso(deadline)}; build a new one"
        )
    if expect.device and manifest["device"] != expect.device:
        raise ProvisioningError(
            "wrong-device", f"archive is for device {manifest['device']}, not {expect.device}"
        )
    serial = manifest.get("serial")
    if expect.serial and serial and serial != expect.serial:
        raise ProvisioningError(
            "serial-mismatch",
            f"archive is for {manifest['device']} with serial {printable(str(serial))}; "
            f"this device's serial is {printable(expect.serial)}",
        )


# ---------------------------------------------------------------- device facts


def trust_anchor_path(layout: Layout) -> Path:
    """Pinned fleet CA fingerprints, written at manufacturing/staging; survives reset."""
    return layout.etc / "trust/fleet-ca.sha256"


ANCHOR_LINE_RE = re.compile(r"sha256:[0-9a-f]{64}")


def trusted_fingerprints(layout: Layout) -> tuple[str, ...]:
    """The pinned CA fingerprints; () when the device has no anchor (physical presence).

    Strict on purpose: every line must be exactly ``sha256:<64 hex>``. A lenient
    parse (split on whitespace) let any text that reached the file, such as a log
    line naming an attacker's fingerprint, become a trusted CA. An anchor that
    exists but is empty or holds anything else refuses every archive.
    """
    path = trust_anchor_path(layout)
    try:
        text = path.read_bytes().decode("ascii")
    except FileNotFoundError:
        if path.is_symlink():  # a link to nothing is a damaged anchor, not a missing one
            raise _bad_anchor(path, "a link to a missing file") from None
        return ()
    except (OSError, UnicodeDecodeError) as exc:
        raise _bad_anchor(path, f"unreadable ({getattr(exc, 'strerror', None) or exc})") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    if not lines:
        raise _bad_anchor(path, "empty")
    for number, line in enumerate(lines, 1):
        if not ANCHOR_LINE_RE.fullmatch(line):
            raise _bad_anchor(path, f"line {number} is not one sha256:<64 hex digits>")
    return tuple(dict.fromkeys(lines))


def _bad_anchor(path: Path, why: str) -> ProvisioningError:
    return ProvisioningError(
        "bad-anchor",
        f"trust anchor {path}: {why}; every archive is refused until it is rewritten "
        "(one sha256:<fingerprint> per line)",
    )


_LOG_SAFE = frozenset(chr(c) for c in range(0x21, 0x7F)) - {"\\"}  # visible ASCII


def printable(text: str) -> str:
    """`text` with every control, whitespace, backslash and non-ASCII character escaped.

    For names that come from the drive (archive file names, manifest fields)
    before they reach a log line: a name stays one token on one line whatever
    it holds, so it can neither start a line of its own nor pass for a separate
    word (a fingerprint, a key) to anything that later reads the log.

    >>> printable("edgefleet- sha256:ab\\n.zip")
    'edgefleet-\\\\x20sha256:ab\\\\x0a.zip'
    """
    return "".join(ch if ch in _LOG_SAFE else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


_SERIAL_SOURCES = (
    Path("/proc/device-tree/serial-number"),
    Path("/sys/class/dmi/id/product_serial"),
)


def hardware_serial(layout: Layout) -> str | None:
    """This box's serial: the lab's (labhooks), else the firmware's (read only when
    FLEET_ROOT is /)."""
    named, serial = labhooks.hardware_serial(layout)
    if named or labhooks.is_simulated(layout):
        return serial
    for source in _SERIAL_SOURCES:
        try:
            text = source.read_bytes().strip(b"\x00\n ").decode(errors="replace")
        except OSError:
            continue
        if text:
            return text
    return None


# member -> (path under etc/fleet, mode); device.json goes last: it marks the device provisioned.
_INSTALL = {
    "device.key": ("device.key", 0o600),
    "device.crt": ("device.crt", 0o644),
    "ca.crt": ("ca.crt", 0o644),
    "network.json": ("network.json", 0o644),
    "ssh_host_ed25519_key": ("ssh/ssh_host_ed25519_key", 0o600),
    "ssh_host_ed25519_key.pub": ("ssh/ssh_host_ed25519_key.pub", 0o644),
    "authorized_keys": ("ssh/authorized_keys", 0o600),
}


def install_plan(
    layout: Layout, archive: Archive, record: dict[str, Any]
) -> list[tuple[Path, bytes, int]]:
    """Files to write, in order: ``(path, bytes, mode)``; device.json (with `record`) last."""
    plan = [(layout.etc / rel, archive.members[m], mode) for m, (rel, mode) in _INSTALL.items()]
    for name in sorted(archive.members):
        if RELEASE_KEY_RE.match(name):
            plan.append((layout.release_keys / name.split("/", 1)[1], archive.members[name], 0o644))
    if MQTT_MEMBER in archive.members:
        mqtt = {
            **json.loads(archive.members[MQTT_MEMBER]),
            "cert": str(layout.device_crt),
            "key": str(layout.device_key),
            "ca": str(layout.ca_crt),
        }
        plan.append((layout.etc / MQTT_MEMBER, _json_bytes(mqtt), 0o644))
    identity = {**archive.identity, "provisioning": record}
    plan.append(
        (
            layout.device_json,
            (json.dumps(identity, indent=2, sort_keys=True) + "\n").encode(),
            0o644,
        )
    )
    return plan


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def identity_paths(layout: Layout) -> list[Path]:
    """Everything provisioning installs (what reset removes); the trust anchor is not here."""
    return (
        [layout.device_json]
        + [layout.etc / rel for rel, _ in _INSTALL.values()]
        + [layout.etc / MQTT_MEMBER, layout.release_keys]
    )
