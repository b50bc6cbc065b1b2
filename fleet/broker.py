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

``fleet lab up --mqtt`` (see :class:`LabMqtt`) runs one for the lab: a
broker CA under ``.fleet/lab/mqtt/``, the fleet CA (``certs/ca.crt``)
trusted as well when present (with its CRL: mosquitto's ``crlfile`` holds a
CRL per trusted CA, so a revoked device certificate fails the handshake), each
lab device given a certificate when it has none, its ``etc/fleet/mqtt.json``
written, and its ``fleet-agent daemon`` started.

>>> broker = Broker(Path(".fleet/lab/mqtt"))            # doctest: +SKIP
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
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fleet_runtime.layout import Layout, atomic_write, atomic_write_json, read_json

from fleet.errors import ConfigError
from fleet.processes import clean_env, pid_runs, reap, terminate, wait_for_port
from fleet.project import Project

HOST = "127.0.0.1"
# Not a valid device name (it has a dot), so no device certificate can ever carry it.
CONTROLLER_CN = "edgefleet.controller"
CONTROLLER_CLIENT_PREFIX = f"{CONTROLLER_CN}."  # controller client ids: no device CN looks like it
TOPIC_PREFIX = "edgefleet"
SYNC_PREFIX = "edgefleet-sync"  # the controller's read barrier (see fleet/heartbeats.py)
DEFAULT_INTERVAL = 10.0


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


# ---- the lab's broker and device daemons -----------------------------------------------

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


class LabMqtt:
    """The lab's broker plus one ``fleet-agent daemon`` per running lab device."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.dir = project.state_dir / "lab" / "mqtt"
        self.broker = Broker(self.dir, trusted_cas=((project.certs / "ca.crt",
                                                      project.certs / "crl.pem"),))
        self.daemons_file = self.dir / "daemons.json"
        self.settings_file = self.dir / "settings.json"  # what `lab up --mqtt` was given

    def up(self, devices: dict[str, Path], interval: float = DEFAULT_INTERVAL) -> BrokerState:
        """Start the broker, give each device (name -> FLEET_ROOT) settings and a daemon.
        Behind `lab up --link`, a device's daemon runs in its site's namespace and reaches
        the broker across the site's link."""
        state = self._start_for(tuple(sorted(set(self._uplinks().values()))))
        atomic_write_json(self.settings_file, {"heartbeat_s": interval})
        for name, root in sorted(devices.items()):
            if not Layout(root).device_json.exists():
                continue  # a factory device has no identity yet: no heartbeats before provisioning
            self.configure(name, Layout(root), state, interval)
            self.start_daemon(name, root)
        return state

    def _uplinks(self) -> dict[str, str]:
        """Lab device -> the broker address it reaches over its site link (`--link` only)."""
        from fleet.lab import Lab
        from fleet.lab_net import LabNet

        lab = Lab(self.project)
        net = LabNet(lab.dir).state()
        by_ns = {site.ns: site.host_addr for site in (net.sites.values() if net else [])}
        return {name: by_ns[dev.netns] for name, dev in lab.devices().items()
                if dev.netns in by_ns}

    def _netns(self, name: str) -> str:
        from fleet.lab import Lab

        devices = Lab(self.project).devices()
        return devices[name].netns if name in devices else ""

    def _start_for(self, site_hosts: tuple[str, ...]) -> BrokerState:
        """The broker, listening on every site link the lab has now (restarted if not)."""
        current = self.broker.state()
        if current is not None and self.broker.running() \
                and not set(site_hosts) <= set(current.site_hosts):
            self.broker.stop()
            return self.broker.start(current.port, current.controller_port, site_hosts)
        return self.broker.start(site_hosts=site_hosts)

    def follow_fault(self, name: str, root: Path, kind: str) -> None:
        """An offline lab device stops its heartbeats too; back online, they resume."""
        if kind == "offline":
            self.stop_daemon(name, root)
        elif kind in ("online", "clear") and self.broker.running() \
                and (root / "etc/fleet/mqtt.json").exists():
            self.start_daemon(name, root)

    def follow_provisioning(self, name: str, root: Path) -> bool:
        """A device provisioned (USB first boot) while the lab broker runs joins it with its
        new certificate: settings written, daemon (re)started. False when no broker runs."""
        state = self.broker.state()
        if state is None or not self.broker.running():
            return False
        if not self.broker.trusts(self.project.certs / "ca.crt"):
            state = self.broker.restart()  # the fleet CA was made after the broker started
        raw = read_json(self.settings_file, default={}) or {}
        self.stop_daemon(name, root)  # one left from an earlier identity
        self.configure(name, Layout(root), state, float(raw.get("heartbeat_s", DEFAULT_INTERVAL)))
        self.start_daemon(name, root)
        return True

    def configure(self, name: str, layout: Layout, state: BrokerState, interval: float) -> None:
        """The device's MQTT identity (its own certificate when it has one) and settings."""
        if layout.device_crt.exists() and layout.device_key.exists():
            identity = Identity(layout.device_crt, layout.device_key, Path(state.ca))
        else:
            identity = self.broker.ca.issue(name, layout.etc, stem="mqtt")
        from fleet.health import agent_flags

        atomic_write_json(layout.etc / "mqtt.json",
                          mqtt_settings(state, identity, interval, agent_flags(self.project),
                                        endpoint=self._uplinks().get(name, "")))

    def revoke_identity(self, name: str) -> list[str]:
        """After ``fleet ca revoke``: also revoke what the lab broker's own CA gave `name`
        (its ``etc/fleet/mqtt.crt`` from before provisioning), which the fleet CRL does not
        cover. Applies when the broker next (re)starts. The serials revoked."""
        if not (self.dir / "ca" / "ca.crt").exists():
            return []  # no lab broker was ever set up: nothing issued
        from fleet.lab import Lab

        on_disk = Layout(Lab(self.project).root(name)).etc / "mqtt.crt"
        return self.broker.ca.revoke(name, (on_disk,) if on_disk.exists() else ())

    def daemons(self) -> dict[str, int]:
        return {k: int(v) for k, v in (read_json(self.daemons_file, default={}) or {}).items()}

    def start_daemon(self, name: str, root: Path) -> int:
        from fleet.lab_net import runs_in

        running = self.daemons()
        if name in running and daemon_alive(running[name], root):
            if runs_in(running[name], self._netns(name)):
                return running[name]
            self.stop_daemon(name, root)  # the device moved to or from a site link
            running = self.daemons()
        agent = str(Path(sys.executable).parent / "fleet-agent")
        log = (root / ".lab").joinpath("daemon.out")
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            from fleet.lab_net import inside

            proc = subprocess.Popen(inside(self._netns(name), [agent, "daemon"]), stdout=out, stderr=out,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env={**clean_env(), "FLEET_ROOT": str(root)})
        running[name] = proc.pid
        atomic_write_json(self.daemons_file, running)
        return proc.pid

    def stop_daemon(self, name: str, root: Path) -> bool:
        running = self.daemons()
        if name not in running:
            return False
        pid = running.pop(name)
        atomic_write_json(self.daemons_file, running)
        if not daemon_alive(pid, root):
            return False
        terminate(pid)
        return True

    def down(self, roots: dict[str, Path]) -> int:
        """Stop every daemon and the broker (by PID); returns how many daemons stopped."""
        stopped = sum(self.stop_daemon(name, roots.get(name, Path("/nonexistent")))
                      for name in list(self.daemons()))
        self.broker.stop()
        return stopped


def daemon_alive(pid: int, root: Path) -> bool:
    """Is `pid` a live `fleet-agent daemon` for this device root (not a reused PID)?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text().split()
    if len(stat) > 2 and stat[2] == "Z":
        reap(pid)
        return False
    return b"daemon" in cmdline and f"FLEET_ROOT={root}".encode() in environ.split(b"\0")
