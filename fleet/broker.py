"""The on-prem MQTT broker: mosquitto with mutual TLS, identities from certificate CNs.

Every client presents a certificate signed by a trusted CA; mosquitto takes
the certificate's CN as the username (``use_identity_as_username``). There
are two listeners, one per role, so that no device certificate can ever
carry the controller's rights:

* the device listener (``port``) trusts the broker CA and the fleet CA, and
  its ACL has no user rules at all: a device publishes only under its own
  topics, whatever its name (even ``controller``)::

      edgefleet/<site>/<its CN>/#       heartbeats (health), job status
      $aws/things/<its CN>/#            device shadow and job topics (as on AWS IoT Core)

  The client id is the CN (``use_username_as_clientid``): a device cannot
  connect under another device's id and so cannot take over its session.
* the controller listener (``controller_port``) trusts only the controller
  CA, which issues nothing but the controller's own certificate (CN
  ``edgefleet.controller``; the dot is not allowed in a device name). It reads
  everything and may publish job documents, under any client id, so several
  controller commands can be connected at once.

The broker is a real ``mosquitto`` process started and stopped by PID; its
files live in one directory (config, ACLs, certificates, log, state).

``fleet lab up --mqtt`` runs one for the lab (see fleet.lab.mqtt), trusting the
fleet CA as well when present, with its CRL: mosquitto's ``crlfile`` holds a CRL
per trusted CA, so a revoked device certificate fails the handshake. The
controller finds the project's own broker through ``local_broker``.

>>> broker = Broker(Path("/srv/edgefleet/mqtt"))          # doctest: +SKIP
>>> broker.start().port                                  # doctest: +SKIP
38883
"""

from __future__ import annotations

import ipaddress
import json
import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fleet_runtime.layout import atomic_write, atomic_write_json, read_json

from fleet.errors import ConfigError
from fleet.processes import clean_env, pid_runs, terminate, wait_for_port
from fleet.project import Project

HOST = "127.0.0.1"
# Not a valid device name (it has a dot), so no device certificate can ever carry it.
CONTROLLER_CN = "edgefleet.controller"
CONTROLLER_CLIENT_PREFIX = f"{CONTROLLER_CN}."  # controller client ids: no device CN looks like it
TOPIC_PREFIX = "edgefleet"
SYNC_PREFIX = "edgefleet-sync"  # the controller's read barrier (see fleet/heartbeats.py)


# ---- certificates ------------------------------------------------------------------------

@dataclass(frozen=True)
class Identity:
    """A client or server identity on disk: certificate, key (0600) and the CA to trust."""

    cert: Path
    key: Path
    ca: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgefleet")])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class BrokerCA:
    """A small EC P-256 CA for the broker's own server certificate and lab clients."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        self.cert, self.key, self.path = cert, key, path

    @classmethod
    def load_or_create(cls, directory: Path, cn: str = "edgefleet broker CA") -> BrokerCA:
        crt, key_path = directory / "ca.crt", directory / "ca.key"
        if crt.exists() and key_path.exists():
            cert = x509.load_pem_x509_certificate(crt.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            return cls(cert, key, crt)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=5))
                .not_valid_after(now + timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                             False), critical=True)
                .sign(key, hashes.SHA256()))
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(key_path, _key_pem(key), mode=0o600)
        atomic_write(crt, cert.public_bytes(serialization.Encoding.PEM))
        return cls(cert, key, crt)

    @property
    def _issued(self) -> Path:
        return self.path.parent / "issued.jsonl"  # one {"cn", "serial"} line per certificate

    @property
    def _revoked(self) -> Path:
        return self.path.parent / "revoked.json"  # serial (hex) -> CN

    def write_crl(self, path: Path) -> Path:
        """This CA's CRL (every certificate `revoke` named): mosquitto checks one CRL for
        every CA it trusts."""
        now = datetime.now(timezone.utc)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
                   .last_update(now - timedelta(minutes=5))
                   .next_update(self.cert.not_valid_after_utc))
        for serial in sorted(read_json(self._revoked, default={}) or {}):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(int(serial, 16))
                .revocation_date(now - timedelta(minutes=5)).build())
        crl = builder.sign(self.key, hashes.SHA256())
        atomic_write(path, crl.public_bytes(serialization.Encoding.PEM))
        return path

    def revoke(self, cn: str, found: tuple[Path, ...] = ()) -> list[str]:
        """Revoke every certificate this CA issued to `cn`, and those of the certificate
        files `found` that it issued to `cn` (ones from before it kept an index); the
        serials (hex). The broker reads the CRL when it starts (``Broker.restart``)."""
        serials = [r["serial"] for r in self._records() if r.get("cn") == cn]
        serials += [s for s in map(self._serial_if_ours, found) if s and s not in serials]
        revoked = dict(read_json(self._revoked, default={}) or {})
        revoked.update({serial: cn for serial in serials})
        atomic_write_json(self._revoked, revoked)
        return serials

    def _serial_if_ours(self, path: Path) -> str | None:
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            cert.verify_directly_issued_by(self.cert)
        except (OSError, ValueError, TypeError, InvalidSignature):
            return None
        return format(cert.serial_number, "x")  # the caller names the device's own file

    def _records(self) -> list[dict[str, Any]]:
        if not self._issued.exists():
            return []
        return [json.loads(line) for line in self._issued.read_text().splitlines() if line]

    def _record(self, cn: str, cert: x509.Certificate) -> None:
        with self._issued.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"cn": cn, "serial": format(cert.serial_number, "x")}) + "\n")

    def issue(self, cn: str, directory: Path, *, server: bool = False, days: int = 365,
              stem: str | None = None, addresses: tuple[str, ...] = ()) -> Identity:
        """Write ``<stem>.crt``/``<stem>.key`` for `cn` (client auth, or server for 127.0.0.1
        and any further `addresses` it listens on)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(timezone.utc)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (x509.CertificateBuilder().subject_name(_name(cn))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(minutes=5))
                   .not_valid_after(now + timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                *(x509.IPAddress(ipaddress.ip_address(a)) for a in (HOST, *addresses))]),
                critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        self._record(cn, cert)
        stem = stem or cn
        directory.mkdir(parents=True, exist_ok=True)
        identity = Identity(directory / f"{stem}.crt", directory / f"{stem}.key", self.path)
        atomic_write(identity.key, _key_pem(key), mode=0o600)
        atomic_write(identity.cert, cert.public_bytes(serialization.Encoding.PEM))
        return identity


# ---- mosquitto ---------------------------------------------------------------------------

def acl_text(prefix: str = TOPIC_PREFIX) -> str:
    """The device listener's ACL: patterns only, every device confined to its own CN."""
    return "\n".join([
        "# written by edgefleet (fleet/broker.py): the device listener; %u is the certificate CN",
        f"pattern write {prefix}/+/%u/#",
        f"pattern read {prefix}/+/%u/jobs/#",
        "pattern readwrite $aws/things/%u/#",
        "",
    ])


def controller_acl_text(prefix: str = TOPIC_PREFIX, controller: str = CONTROLLER_CN) -> str:
    """The controller listener's ACL: the controller reads all and publishes jobs."""
    return "\n".join([
        "# written by edgefleet (fleet/broker.py): the controller listener (controller CA only)",
        f"user {controller}",
        f"topic read {prefix}/#",
        f"topic write {prefix}/+/+/jobs/#",
        f"topic readwrite {SYNC_PREFIX}/#",
        "topic read $aws/things/#",
        "topic write $aws/things/+/jobs/#",
        "",
    ])


def mosquitto_path() -> str:
    found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(found).exists():
        raise ConfigError("mosquitto is not installed",
                          fix="apt-get install mosquitto (scripts/system-deps.sh does it)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class BrokerState:
    port: int
    pid: int
    ca: str
    controller_cert: str
    controller_key: str
    host: str = HOST
    controller_port: int = 0  # the controller's own listener (0: a state file from before it)
    site_hosts: list[str] = field(default_factory=list)  # device listener on lab site links too


class Broker:
    """A mosquitto process with mTLS and the ACL above; its files live in `directory`."""

    def __init__(self, directory: Path, trusted_cas: tuple[tuple[Path, Path], ...] = ()) -> None:
        """``trusted_cas``: (CA certificate, its CRL) pairs trusted for clients besides the
        broker's own CA, when the certificate exists (the fleet CA's is ``certs/crl.pem``)."""
        self.dir = directory
        self.trusted_cas = trusted_cas
        self.state_file = directory / "broker.json"

    @property
    def ca(self) -> BrokerCA:
        return BrokerCA.load_or_create(self.dir / "ca")

    @property
    def controller_ca(self) -> BrokerCA:
        """Issues the controller's certificate and nothing else (see the module doc)."""
        return BrokerCA.load_or_create(self.dir / "controller-ca", cn="edgefleet controller CA")

    def state(self) -> BrokerState | None:
        raw = read_json(self.state_file, default=None)
        return BrokerState(**raw) if raw else None

    def running(self) -> bool:
        st = self.state()
        return st is not None and pid_is_mosquitto(st.pid, str(self.dir))

    def start(self, port: int = 0, controller_port: int = 0,
              site_hosts: tuple[str, ...] = ()) -> BrokerState:
        """Start mosquitto (or return the running one) and wait until it accepts TLS.
        ``site_hosts``: controller-side addresses of lab site links (`lab up --link`) where
        the device listener answers too, on the same port."""
        current = self.state()
        if current is not None and self.running():
            return current
        ca, controller_ca = self.ca, self.controller_ca
        server = ca.issue("localhost", self.dir / "tls", server=True, stem="server",
                          addresses=site_hosts)
        controller = controller_ca.issue(CONTROLLER_CN, self.dir / "tls", stem="controller")
        controller = Identity(controller.cert, controller.key, ca.path)  # verify the server
        bundle, crls = self._ca_bundle(ca), self._crl_bundle(ca)
        ports = Ports(port or free_port(), controller_port or free_port())
        conf = self._write_config(ports, server, (bundle, crls), self._controller_trust(),
                                  site_hosts)
        log = (self.dir / "mosquitto.log").open("ab")
        proc = subprocess.Popen([mosquitto_path(), "-c", str(conf)], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env=clean_env())
        log.close()
        state = BrokerState(ports.devices, proc.pid, str(ca.path), str(controller.cert),
                            str(controller.key), controller_port=ports.controller,
                            site_hosts=list(site_hosts))
        atomic_write_json(self.state_file, asdict(state))
        wait_for_listener(ports.devices, proc.pid, self.dir / "mosquitto.log")
        wait_for_listener(ports.controller, proc.pid, self.dir / "mosquitto.log")
        return state

    def _controller_trust(self) -> tuple[Path, Path]:
        controller_ca = self.controller_ca
        return controller_ca.path, controller_ca.write_crl(self.dir / "controller-ca" / "crl.pem")

    def trusts(self, ca_cert: Path) -> bool:
        """Is `ca_cert` among the client CAs the running broker was started with?"""
        bundle = self.dir / "clients-ca.pem"
        pem = ca_cert.read_bytes().strip() if ca_cert.exists() else b""
        return bool(pem) and bundle.exists() and pem in bundle.read_bytes()

    def restart(self) -> BrokerState:
        """Stop and start again on the same port: every client reconnects, so a certificate
        revoked since is refused now, not at its next reconnect."""
        current = self.state()
        self.stop()
        if current is None:
            return self.start()
        return self.start(current.port, current.controller_port, tuple(current.site_hosts))

    def _ca_bundle(self, ca: BrokerCA) -> Path:
        """Client CAs mosquitto trusts: its own, plus the fleet CA when the project has one."""
        pems = [ca.path.read_bytes()]
        pems += [crt.read_bytes() for crt, _ in self.trusted_cas if crt.exists()]
        path = self.dir / "clients-ca.pem"
        atomic_write(path, _concat(pems))
        return path

    def _crl_bundle(self, ca: BrokerCA) -> Path:
        """One CRL per trusted CA (OpenSSL refuses a client whose CA has none). A missing or
        expired CRL stops the start here, with the fix, rather than at every handshake."""
        pems = [ca.write_crl(self.dir / "ca" / "crl.pem").read_bytes()]
        now = datetime.now(timezone.utc)
        for crt, crl_path in self.trusted_cas:
            if not crt.exists():
                continue
            if not crl_path.exists():
                raise ConfigError(f"the CA {crt} has no CRL at {crl_path}",
                                  fix="`fleet ca crl` writes a fresh one")
            try:
                crl = x509.load_pem_x509_crl(crl_path.read_bytes())
                signed = crl.is_signature_valid(
                    x509.load_pem_x509_certificate(crt.read_bytes()).public_key())  # type: ignore[arg-type]
            except ValueError:
                signed = False
            if not signed:
                raise ConfigError(f"{crl_path} is not a CRL signed by the CA {crt}",
                                  fix="`fleet ca crl` writes a fresh one")
            if crl.next_update_utc is not None and crl.next_update_utc < now:
                raise ConfigError(f"the CRL {crl_path} expired on {crl.next_update_utc:%Y-%m-%d}",
                                  fix="`fleet ca crl` re-signs it")
            pems.append(crl_path.read_bytes())
        path = self.dir / "clients-crl.pem"
        atomic_write(path, _concat(pems))
        return path

    def _write_config(self, ports: Ports, server: Identity, devices: tuple[Path, Path],
                      controller: tuple[Path, Path], site_hosts: tuple[str, ...] = ()) -> Path:
        """mosquitto.conf: two listeners, each with its own CAs, ACL and client-id rule."""
        acl, controller_acl = self.dir / "acl", self.dir / "controller.acl"
        atomic_write(acl, acl_text().encode())
        atomic_write(controller_acl, controller_acl_text().encode())
        conf = self.dir / "mosquitto.conf"
        atomic_write(conf, "\n".join([
            "# written by edgefleet (fleet/broker.py)",
            # As root, mosquitto would switch to its own user and lose our 0600 files.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "per_listener_settings true", "persistence false",
            f"log_dest file {self.dir / 'mosquitto.log'}",
            "log_type error", "log_type warning", "log_type notice",
            *(line for host in (HOST, *site_hosts)
              for line in [*_listener(ports.devices, server, devices, acl, host),
                           # The client id is the certificate's CN: no device can take
                           # over another's session.
                           "use_username_as_clientid true"]),
            *_listener(ports.controller, server, controller, controller_acl),
            "",
        ]).encode())
        return conf

    def stop(self) -> bool:
        """Stop the broker by PID; True if one was running."""
        st = self.state()
        was = st is not None and self.running()
        if st is not None and was:
            terminate(st.pid)
        self.state_file.unlink(missing_ok=True)
        return was


@dataclass(frozen=True)
class Ports:
    devices: int
    controller: int


def _listener(port: int, server: Identity, trust: tuple[Path, Path], acl: Path,
              host: str = HOST) -> list[str]:
    cafile, crlfile = trust
    return [f"listener {port} {host}", "protocol mqtt", "allow_anonymous false",
            f"acl_file {acl}", f"cafile {cafile}", f"crlfile {crlfile}",
            f"certfile {server.cert}", f"keyfile {server.key}",
            "require_certificate true", "use_identity_as_username true",
            "tls_version tlsv1.2"]


def _concat(pems: list[bytes]) -> bytes:
    return b"".join(p if p.endswith(b"\n") else p + b"\n" for p in pems)


def pid_is_mosquitto(pid: int, marker: str) -> bool:
    return pid_runs(pid, "mosquitto", marker)


def wait_for_listener(port: int, pid: int, log: Path, timeout: float = 15.0) -> None:
    wait_for_port(port, pid, log, "mosquitto", timeout)


# ---- device settings ------------------------------------------------------------------

def mqtt_settings(state: BrokerState, identity: Identity, interval: float,
                  health_args: list[str] | None = None, endpoint: str = "") -> dict[str, Any]:
    """A device's ``etc/fleet/mqtt.json`` for an on-prem broker.

    ``health_args`` carries the fleet.yaml thresholds, so heartbeats judge
    health the way `fleet health` over SSH does.
    """
    return {"mode": "broker", "endpoint": endpoint or state.host, "port": state.port,
            "ca": str(identity.ca), "cert": str(identity.cert), "key": str(identity.key),
            "topic_prefix": TOPIC_PREFIX, "heartbeat_s": interval,
            "health_args": list(health_args or [])}


# ---- the project's own broker ------------------------------------------------------------

def local_broker_file(project: Project) -> Path:
    """Names the directory of a broker run for this project (``fleet lab up --mqtt`` writes
    it): the controller uses that broker when fleet.yaml names none."""
    return project.state_dir / "local-broker.json"


def use_local_broker(project: Project, directory: Path) -> None:
    atomic_write_json(local_broker_file(project), {"dir": str(directory)})


def local_broker(project: Project) -> Broker | None:
    raw = read_json(local_broker_file(project), default=None) or {}
    return Broker(Path(raw["dir"])) if isinstance(raw.get("dir"), str) else None
