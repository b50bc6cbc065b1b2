"""The fleet CA: encrypted key at rest, device certificates, revocation, `fleet ca`."""

from __future__ import annotations

import json
import stat
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fixtures_provisioning import PASSPHRASE, run_cli

from fleet import pki
from fleet.errors import ConfigError, FleetError, UsageError
from fleet.project import Project

REPO = Path(__file__).resolve().parents[1]
ENV = {"FLEET_CA_PASSPHRASE": PASSPHRASE.decode()}


@pytest.fixture
def ca(project: Project) -> pki.FleetCA:
    return pki.init_ca(project, org="Acme", passphrase=PASSPHRASE)


@pytest.mark.parametrize(
    "key_type, cls, bits",
    [
        ("ec-p256", ec.EllipticCurvePublicKey, 256),
        ("ec-p384", ec.EllipticCurvePublicKey, 384),
        ("rsa2048", rsa.RSAPublicKey, 2048),
    ],
)
def test_init_creates_a_ca_of_each_key_type(
    project: Project, key_type: str, cls: type, bits: int
) -> None:
    ca = pki.init_ca(project, org="Acme", key_type=key_type, passphrase=PASSPHRASE)
    cert = pki.load_ca_cert(project)
    key = cert.public_key()
    assert isinstance(key, cls) and key.key_size == bits
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Acme"
    issued = ca.issue_device("cam-01")
    issued.cert.verify_directly_issued_by(cert)
    assert pki.describe(project)["key_type"] == key_type


def test_private_key_is_encrypted_0600_and_git_ignored(project: Project, ca: pki.FleetCA) -> None:
    key_path = project.certs / "private/ca.key"
    data = key_path.read_bytes()
    assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(data, password=None)
    assert PASSPHRASE not in data
    ignored = subprocess.run(["git", "check-ignore", "-q", "certs/private/ca.key"], cwd=REPO)
    assert ignored.returncode == 0, "certs/private/ must be git-ignored"


def test_load_needs_the_right_passphrase(project: Project, ca: pki.FleetCA) -> None:
    assert pki.load_ca(project, PASSPHRASE).fingerprint == ca.fingerprint
    with pytest.raises(FleetError, match="wrong passphrase"):
        pki.load_ca(project, b"not-the-passphrase")
    with pytest.raises(UsageError, match="FLEET_CA_PASSPHRASE"):
        pki.load_ca(project, None)


def test_init_refuses_to_replace_a_ca_or_take_a_short_passphrase(
    project: Project, ca: pki.FleetCA
) -> None:
    with pytest.raises(ConfigError, match="already exists"):
        pki.init_ca(project, org="Other", passphrase=PASSPHRASE)
    assert pki.load_ca_cert(project).fingerprint(
        ca.cert.signature_hash_algorithm
    ) == ca.cert.fingerprint(ca.cert.signature_hash_algorithm)
    with pytest.raises(UsageError, match="at least 8"):
        pki.init_ca(project, org="Acme", passphrase=b"short", force=True)
    with pytest.raises(UsageError, match="unknown key type"):
        pki.init_ca(project, org="Acme", key_type="dsa1024", passphrase=PASSPHRASE, force=True)


def test_device_certificate_profile(ca: pki.FleetCA) -> None:
    issued = ca.issue_device("berlin-01", serial="SN-42", site="berlin")
    cert = issued.cert
    subject = cert.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "berlin-01"
    assert subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "SN-42"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "berlin"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=825)
    key = serialization.load_pem_private_key(issued.key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    cert.verify_directly_issued_by(ca.cert)


def test_device_certificate_validity_and_names_are_checked(ca: pki.FleetCA) -> None:
    cert = ca.issue_device("cam_2", days=30).cert
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=30)
    assert not cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    for bad in ("", "a/b", "dev.1", "x" * 256, "caf\u00e9"):
        with pytest.raises(UsageError, match="invalid device name"):
            ca.issue_device(bad)
    with pytest.raises(UsageError):
        ca.issue_device("ok", days=0)


def test_role_names_are_never_device_names(ca: pki.FleetCA) -> None:
    """Issue 12.6: a device certificate named `controller` looked like the controller."""
    for role in ("controller", "Controller", "broker", "localhost", "edgefleet"):
        with pytest.raises(UsageError, match="reserved for the fleet's own services"):
            ca.issue_device(role)
    assert ca.issue_device("controller-01").name == "controller-01"


def test_revoke_writes_a_crl_signed_by_the_ca(project: Project, ca: pki.FleetCA) -> None:
    first, other = ca.issue_device("cam-01"), ca.issue_device("cam-02")
    second = ca.issue_device("cam-01")
    ca.record_issued([first, other, second])
    serials = ca.revoke("cam-01", reason="keyCompromise")
    assert sorted(serials) == sorted(format(c.cert.serial_number, "x") for c in (first, second))
    crl = x509.load_pem_x509_crl((project.certs / "crl.pem").read_bytes())
    assert crl.is_signature_valid(ca.cert.public_key())
    assert crl.get_revoked_certificate_by_serial_number(first.cert.serial_number) is not None
    assert crl.get_revoked_certificate_by_serial_number(other.cert.serial_number) is None
    assert (project.certs / "devices/cam-01.crt").read_bytes() == second.cert_pem
    with pytest.raises(ConfigError, match="no certificate was issued"):
        ca.revoke("nobody")
    assert pki.describe(project)["revoked"] == 2


def test_cli_init_show_revoke(project_dir: Path) -> None:
    result = run_cli(project_dir, "ca", "init", "--org", "Acme", "--key-type", "ec-p384", env=ENV)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip().startswith("sha256:")
    assert "PRIVATE KEY" not in result.stdout + result.stderr
    assert PASSPHRASE.decode() not in result.stdout + result.stderr
    shown = run_cli(project_dir, "ca", "show", "--json")
    info = json.loads(shown.stdout)
    assert info["key_type"] == "ec-p384" and info["key_encrypted"] is True
    assert info["fingerprint"] == result.stdout.strip()
    left = datetime.fromisoformat(info["crl_next_update"]) - datetime.now(timezone.utc)
    assert timedelta(days=pki.CRL_DAYS - 1) < left <= timedelta(days=pki.CRL_DAYS)
    table = run_cli(project_dir, "ca", "show")
    assert "O=Acme,CN=Acme fleet root CA" in table.stdout
    again = run_cli(project_dir, "ca", "init", env=ENV)
    assert again.exit_code == 2 and "already exists" in again.stderr
    project = Project.locate(project_dir)
    ca = pki.load_ca(project, PASSPHRASE)
    ca.record_issued([ca.issue_device("cam-01")])
    revoked = run_cli(project_dir, "ca", "revoke", "cam-01", "--json", env=ENV)
    assert revoked.exit_code == 0 and len(json.loads(revoked.stdout)["revoked"]) == 1


def test_cli_without_passphrase_is_refused_plainly(project_dir: Path) -> None:
    result = run_cli(project_dir, "ca", "init", env={"FLEET_CA_PASSPHRASE": ""})
    assert result.exit_code == 2
    assert "FLEET_CA_PASSPHRASE" in result.stderr and "Traceback" not in result.stderr
    assert not (project_dir / "certs/ca.crt").exists()
    missing = run_cli(project_dir, "ca", "show")
    assert missing.exit_code == 2 and "fleet ca init" in missing.stderr
