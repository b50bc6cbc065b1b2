"""The fleet PKI: a root CA, device certificates, SSH host keys, revocation.

Files in the project (``certs/``)::

    certs/ca.crt                 fleet CA certificate (public, may be committed)
    certs/private/ca.key         CA private key, PKCS#8 encrypted with the passphrase (git-ignored)
    certs/devices/<name>.crt     issued device certificates (public)
    certs/issued.jsonl           one line per issued certificate: device, serial, validity
    certs/revoked.json, crl.pem  revocations and the CRL signed by the CA

The passphrase comes from ``FLEET_CA_PASSPHRASE`` or the CLI's prompt; it is
never written anywhere. Device keys are ECDSA P-256 (AWS IoT Core and
mosquitto accept them); device certificates carry CN = device name, the
hardware serial as ``serialNumber`` and the TLS client-auth EKU.

>>> ca = init_ca(project, org="Acme", passphrase=b"s3cret-pass")  # doctest: +SKIP
>>> issued = ca.issue_device("berlin-01", serial="SN123")          # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fleet_runtime.layout import atomic_write, atomic_write_json, read_json
from fleet_runtime.provisioning import ProvisioningError, cert_fingerprint, check_device_name

from fleet.errors import ConfigError, FleetError, UsageError
from fleet.project import Project

PASSPHRASE_ENV = "FLEET_CA_PASSPHRASE"  # noqa: S105  (a variable name, not a secret)
KEY_TYPES = ("ec-p256", "rsa2048", "ec-p384")
DEFAULT_KEY_TYPE = "ec-p256"
DEFAULT_DEVICE_DAYS = 825
CA_DAYS = 3650
MIN_PASSPHRASE = 8
CRL_DAYS = 30

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class CaPaths:
    certs: Path

    @property
    def cert(self) -> Path:
        return self.certs / "ca.crt"

    @property
    def key(self) -> Path:
        return self.certs / "private/ca.key"

    @property
    def devices(self) -> Path:
        return self.certs / "devices"

    @property
    def issued(self) -> Path:
        return self.certs / "issued.jsonl"

    @property
    def revoked(self) -> Path:
        return self.certs / "revoked.json"

    @property
    def crl(self) -> Path:
        return self.certs / "crl.pem"


@dataclass(frozen=True)
class IssuedDevice:
    """A freshly issued device identity (the key exists only in memory and in the archive)."""

    name: str
    key_pem: bytes
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def fingerprint(self) -> str:
        return cert_fingerprint(self.cert)

    def record(self) -> dict[str, Any]:
        return {
            "device": self.name,
            "serial": format(self.cert.serial_number, "x"),
            "fingerprint": self.fingerprint,
            "not_before": self.cert.not_valid_before_utc.isoformat(),
            "not_after": self.cert.not_valid_after_utc.isoformat(),
        }


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def passphrase_from_env() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode() if value else None


def generate_key(key_type: str) -> PrivateKey:
    """A new private key of `key_type` (one of KEY_TYPES)."""
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise UsageError(f"unknown key type '{key_type}'", fix=f"use one of {', '.join(KEY_TYPES)}")


def key_type_of(key: Any) -> str:
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return f"rsa{key.key_size}"
    return f"ec-p{key.curve.key_size}"


def _signing_hash(key: Any) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


class FleetCA:
    """The fleet root CA with its private key unlocked in memory."""

    def __init__(self, paths: CaPaths, cert: x509.Certificate, key: PrivateKey) -> None:
        self.paths, self.cert, self.key = paths, cert, key
        self._hash = _signing_hash(key)

    @property
    def fingerprint(self) -> str:
        return cert_fingerprint(self.cert)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def org(self) -> str | None:
        attrs = self.cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        return str(attrs[0].value) if attrs else None

    def issue_device(
        self,
        name: str,
        *,
        serial: str | None = None,
        site: str | None = None,
        days: int = DEFAULT_DEVICE_DAYS,
        now: datetime | None = None,
    ) -> IssuedDevice:
        """A new ECDSA P-256 key and a client certificate for device `name`."""
        _checked_name(name)
        if days < 1:
            raise UsageError(f"certificate validity must be at least 1 day, not {days}")
        key = ec.generate_private_key(ec.SECP256R1())
        start = (now or now_utc()) - timedelta(minutes=5)  # tolerate small clock skew
        cert = (
            x509.CertificateBuilder()
            .subject_name(device_subject(name, serial=serial, site=site, org=self.org))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(self._aki, critical=False)
            .sign(self.key, self._hash)
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return IssuedDevice(name, pem, cert)

    @property
    def _aki(self) -> x509.AuthorityKeyIdentifier:
        ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

    def sign(self, data: bytes) -> bytes:
        """The CA's signature of `data` (what manifest.sig holds)."""
        from fleet_runtime.provisioning import sign_bytes

        return sign_bytes(self.key, data)

    def record_issued(self, issued: list[IssuedDevice]) -> None:
        """Keep the public certificates and one index line per certificate."""
        for item in issued:
            self.save_certificate(item)
        self.append_index(issued)

    def save_certificate(self, item: IssuedDevice) -> None:
        """``certs/devices/<name>.crt`` (public and re-creatable: no fsync)."""
        self.paths.devices.mkdir(parents=True, exist_ok=True)
        path = self.paths.devices / f"{item.name}.crt"
        atomic_write(path, item.cert_pem, 0o644, sync=False)

    def append_index(self, issued: list[IssuedDevice]) -> None:
        """One line per certificate in ``certs/issued.jsonl`` (what revoke reads)."""
        lines = "".join(json.dumps(item.record(), sort_keys=True) + "\n" for item in issued)
        with open(self.paths.issued, "a", encoding="utf-8") as fh:
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())

    def revoke(self, device: str, *, reason: str = "unspecified") -> list[str]:
        """Revoke every certificate issued to `device`; rewrite the CRL. Returns serials."""
        serials = [r["serial"] for r in issued_records(self.paths) if r["device"] == device]
        if not serials:
            raise ConfigError(
                f"no certificate was issued to device '{device}'",
                where=str(self.paths.issued),
                fix="check the name with `fleet ca show`",
            )
        revoked = dict(read_json(self.paths.revoked, default={}) or {})
        for serial in serials:
            revoked.setdefault(
                serial, {"device": device, "at": now_utc().isoformat(), "reason": reason}
            )
        atomic_write_json(self.paths.revoked, revoked)
        self.write_crl(revoked)
        return serials

    def write_crl(self, revoked: dict[str, Any] | None = None) -> x509.CertificateRevocationList:
        revoked = (
            revoked if revoked is not None else dict(read_json(self.paths.revoked, default={}))
        )
        now = now_utc()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now)
            .next_update(now + timedelta(days=CRL_DAYS))
            .add_extension(self._aki, critical=False)
        )
        for serial, entry in sorted(revoked.items()):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(int(serial, 16))
                .revocation_date(datetime.fromisoformat(entry["at"]))
                .build()
            )
        crl = builder.sign(self.key, self._hash)
        atomic_write(self.paths.crl, crl.public_bytes(serialization.Encoding.PEM), 0o644)
        return crl


def _checked_name(name: str) -> str:
    try:
        return check_device_name(name)
    except ProvisioningError as exc:
        raise UsageError(exc.message) from None


def _key_usage(*, digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def device_subject(
    name: str, *, serial: str | None, site: str | None, org: str | None
) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, name)]
    if serial:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial))
    if site:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, site))
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def ca_paths(project: Project) -> CaPaths:
    return CaPaths(project.certs)


def _check_passphrase(passphrase: bytes | None) -> bytes:
    if not passphrase:
        raise UsageError(
            "the fleet CA key is locked: no passphrase given",
            fix=f"set {PASSPHRASE_ENV} or run the command in a terminal to be prompted",
        )
    return passphrase


def init_ca(
    project: Project,
    *,
    org: str,
    key_type: str = DEFAULT_KEY_TYPE,
    passphrase: bytes | None,
    days: int = CA_DAYS,
    force: bool = False,
) -> FleetCA:
    """Create the fleet root CA: key encrypted with `passphrase`, self-signed certificate."""
    paths = ca_paths(project)
    if paths.cert.exists() and not force:
        raise ConfigError(
            "a fleet CA already exists",
            where=str(paths.cert),
            fix="use it (`fleet ca show`), or pass --force to replace it",
        )
    secret = _check_passphrase(passphrase)
    if len(secret) < MIN_PASSPHRASE:
        raise UsageError(f"the CA passphrase must have at least {MIN_PASSPHRASE} characters")
    key = generate_key(key_type)
    cert = _self_signed(key, org, days)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(secret),
    )
    paths.key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(paths.key, encrypted, 0o600)
    atomic_write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    for stale in (paths.revoked, paths.issued):
        stale.unlink(missing_ok=True)
    ca = FleetCA(paths, cert, key)
    ca.write_crl({})
    return ca


def _self_signed(key: PrivateKey, org: str, days: int) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"{org} fleet root CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        ]
    )
    start = now_utc() - timedelta(minutes=5)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(digital_signature=True, cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, _signing_hash(key))
    )


def load_ca_cert(project: Project) -> x509.Certificate:
    """The fleet CA certificate (no passphrase needed)."""
    path = ca_paths(project).cert
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(
            "no fleet CA in this project", where=str(path), fix="create one with `fleet ca init`"
        ) from None


def load_ca(project: Project, passphrase: bytes | None) -> FleetCA:
    """The fleet CA with its key unlocked by `passphrase`."""
    paths = ca_paths(project)
    cert = load_ca_cert(project)
    secret = _check_passphrase(passphrase)
    try:
        key = serialization.load_pem_private_key(paths.key.read_bytes(), password=secret)
    except FileNotFoundError:
        raise ConfigError(
            "the fleet CA private key is missing",
            where=str(paths.key),
            fix="restore it from your backup, or `fleet ca init --force`",
        ) from None
    except (ValueError, TypeError):
        raise FleetError(
            "wrong passphrase for the fleet CA key",
            where=str(paths.key),
            fix=f"check {PASSPHRASE_ENV}",
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigError("unsupported fleet CA key type", where=str(paths.key))
    return FleetCA(paths, cert, key)


def issued_records(paths: CaPaths) -> list[dict[str, Any]]:
    if not paths.issued.exists():
        return []
    return [json.loads(line) for line in paths.issued.read_text().splitlines() if line.strip()]


def describe(project: Project) -> dict[str, Any]:
    """What `fleet ca show` reports: the CA and counts of issued/revoked certificates."""
    paths = ca_paths(project)
    cert = load_ca_cert(project)
    revoked = read_json(paths.revoked, default={}) or {}
    issued = issued_records(paths)
    return {
        "subject": cert.subject.rfc4514_string(),
        "key_type": key_type_of(cert.public_key()),
        "fingerprint": cert_fingerprint(cert),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "certificate": str(paths.cert),
        "private_key": str(paths.key),
        "key_encrypted": _is_encrypted(paths.key),
        "issued": len(issued),
        "devices": len({r["device"] for r in issued}),
        "revoked": len(revoked),
        "crl": str(paths.crl),
        "crl_next_update": _crl_next_update(paths.crl),
    }


def revoked_serials(project: Project) -> tuple[str, dict[str, datetime]]:
    """The fleet CA's subject (RFC 4514) and every serial (hex) its CRL revokes, with the
    date; nothing when the project has no CA or CRL. A CRL the CA did not sign is refused."""
    paths = ca_paths(project)
    if not paths.cert.exists() or not paths.crl.exists():
        return "", {}
    cert = load_ca_cert(project)
    try:
        crl = x509.load_pem_x509_crl(paths.crl.read_bytes())
        signed = crl.is_signature_valid(cert.public_key())  # type: ignore[arg-type]
    except ValueError:
        signed = False
    if not signed:
        raise ConfigError(
            "the CRL is not signed by the fleet CA", where=str(paths.crl),
            fix="`fleet ca crl` writes a fresh one",
        )
    revoked = {format(r.serial_number, "x"): r.revocation_date_utc for r in crl}
    return cert.subject.rfc4514_string(), revoked


def _crl_next_update(path: Path) -> str | None:
    """When the CRL must be re-signed (`fleet ca crl`): the lab broker refuses an expired one."""
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except (OSError, ValueError):
        return None
    return crl.next_update_utc.isoformat() if crl.next_update_utc else None


def _is_encrypted(path: Path) -> bool:
    try:
        return b"ENCRYPTED" in path.read_bytes()[:64]
    except FileNotFoundError:
        return False


def ssh_host_key() -> tuple[bytes, str]:
    """A new Ed25519 SSH host key: (OpenSSH private key bytes, "ssh-ed25519 AAAA..." public)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public.decode()
