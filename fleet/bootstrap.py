"""First contact with a box already in the field: ``fleet device bootstrap``.

The one place where a host key is not pinned beforehand: the box has its own key
and its admin's credential (a password or a key). The operator confirms the key's
fingerprint (as ``ssh-keygen -lf`` shows it on the box's console) or passes it;
only then do we log in, and only to a server offering that same key. Then, over
that session, the box is made what USB provisioning makes it:

1. the package is installed (``dpkg -i``; on a lab device, whose agent already
   runs from the controller's venv, the layout is made under its FLEET_ROOT),
2. the fleet CA is pinned as the box's trust anchor, as the factory does,
3. a provisioning archive (``fleet.provisioning.build_archives``: certificate,
   new host key pinned in ``.fleet/known_hosts``, registry record) is copied to
   the box and installed by its own ``fleet-agent provision --usb``,
4. SSH is closed to the first-contact credential: a drop-in turns password login
   off and names the fleet host key and authorized keys; a key given with --key
   is removed from the user's authorized_keys,
5. the box reboots (``Installer.restart``) and must answer with its new key and
   the controller's key; then the registry marks it provisioned.

>>> offered = offered_key("10.0.0.7", 22)                       # doctest: +SKIP
>>> offered.keygen_line("10.0.0.7", 22)                         # doctest: +SKIP
'256 SHA256:3q2+7w... 10.0.0.7 (ED25519)'
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import paramiko
from fleet_runtime import provisioning as fmt
from fleet_runtime.layout import Layout

from fleet import pki
from fleet import provisioning as prov
from fleet.agent import Agent
from fleet.errors import DeviceError, HostKeyError, UsageError
from fleet.project import Project
from fleet.transport import SSHSession, controller_key, fingerprint, known_hosts_name

PASSWORD_ENV = "FLEET_BOOTSTRAP_PASSWORD"  # noqa: S105  (a variable name, not a secret)
DROP_IN = "etc/ssh/sshd_config.d/50-edgefleet.conf"
KEY_TYPES = {"ssh-ed25519": "ED25519", "ssh-rsa": "RSA", "ecdsa-sha2-nistp256": "ECDSA",
             "ecdsa-sha2-nistp384": "ECDSA", "ecdsa-sha2-nistp521": "ECDSA"}


@dataclass(frozen=True)
class FirstContact:
    """How to reach the box before it is ours: its address and its admin's credential."""

    host: str
    port: int = 22
    user: str = "root"
    password: str | None = field(default=None, repr=False)
    key: Path | None = None

    def check(self) -> None:
        if (self.password is None) == (self.key is None):
            raise UsageError("give the box's credential: --password-prompt or --key FILE")
        if self.key is not None and not self.key.is_file():
            raise UsageError(f"no such key file {self.key}", fix="pass the admin's private key")


@dataclass(frozen=True)
class OfferedKey:
    key: paramiko.PKey

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)

    def keygen_line(self, host: str, port: int) -> str:
        """As ``ssh-keygen -lf`` prints it: bits, fingerprint, comment, (TYPE)."""
        kind = KEY_TYPES.get(self.key.get_name(), self.key.get_name().upper())
        return f"{self.key.get_bits()} {self.fingerprint} {known_hosts_name(host, port)} ({kind})"


def _transport(host: str, port: int, timeout: float = 10) -> paramiko.Transport:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise DeviceError(f"cannot connect to {host}:{port}: {exc.strerror or exc}",
                          fix="check the box is powered and reachable") from exc
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        transport.close()
        raise DeviceError(f"SSH handshake with {host}:{port} failed: {exc}") from exc
    return transport


def offered_key(host: str, port: int) -> OfferedKey:
    """The host key the box offers (read without logging in)."""
    transport = _transport(host, port)
    try:
        return OfferedKey(transport.get_remote_server_key())
    finally:
        transport.close()


def check_fingerprint(offered: OfferedKey, expected: str, where: str) -> None:
    want = expected.strip()
    want = want if want.startswith("SHA256:") else f"SHA256:{want}"
    if want.rstrip("=") != offered.fingerprint:
        raise HostKeyError(f"{where} offers host key {offered.fingerprint}, not {want}",
                           fix="compare with `ssh-keygen -lf` on the box's console; "
                               "someone may be in between")


def open_session(contact: FirstContact, confirmed: OfferedKey, device: str) -> SSHSession:
    """Log in with the first-contact credential, to a server offering the confirmed key only."""
    transport = _transport(contact.host, contact.port)
    where = f"{contact.host}:{contact.port}"
    try:
        if transport.get_remote_server_key().asbytes() != confirmed.key.asbytes():
            raise HostKeyError(f"{where} changed its host key after it was confirmed",
                               fix="investigate before trusting this box")
        if contact.key is not None:
            transport.auth_publickey(contact.user, paramiko.PKey.from_path(str(contact.key)))
        else:
            transport.auth_password(contact.user, contact.password or "")
    except paramiko.AuthenticationException:
        transport.close()
        raise DeviceError(f"{where} refused the login of {contact.user}",
                          fix="check the user and the password or key") from None
    except (paramiko.SSHException, OSError, HostKeyError) as exc:
        transport.close()
        if isinstance(exc, HostKeyError):
            raise
        raise DeviceError(f"SSH login to {where} failed: {exc}") from exc
    return SSHSession(device, transport, command_timeout=300)


# ---------------------------------------------------------------- installing


class Installer(Protocol):
    """How the device side gets onto the box, and how the box restarts afterwards."""

    def install(self, session: SSHSession) -> str: ...

    def restart(self, session: SSHSession, project: Project, contact: FirstContact,
                device: str) -> None: ...


def run(session: SSHSession, argv: list[str], what: str) -> str:
    res = session.exec(argv)
    if res.rc != 0:
        tail = (res.stderr or res.stdout).decode(errors="replace").strip().splitlines()[-1:]
        raise DeviceError(f"{session.device}: {what} failed (exit {res.rc}): {' '.join(tail)}")
    return res.stdout.decode(errors="replace")


@dataclass
class DebianInstaller:
    """A real box: copy the .deb, ``dpkg -i`` it (with ``sudo -n`` for a user other than root)."""

    package: Path
    user: str = "root"

    def install(self, session: SSHSession) -> str:
        remote = f"/tmp/{self.package.name}"  # noqa: S108  (the box's, removed right after)
        session.sftp.put(str(self.package), remote)
        sudo = [] if self.user == "root" else ["sudo", "-n"]
        try:
            run(session, [*sudo, "dpkg", "-i", remote], "installing the package")
        finally:
            session.sftp.remove(remote)
        return f"dpkg -i {self.package.name}"

    def restart(self, session: SSHSession, project: Project, contact: FirstContact,
                device: str) -> None:
        Agent(session, device, "fleet-agent").call("reboot")
        wait_for_fleet_login(project, contact, device)


def wait_for_fleet_login(project: Project, contact: FirstContact, device: str,
                         timeout_s: float = 300.0, poll_s: float = 5.0) -> None:
    """Until the box answers with its pinned new key and the controller's key."""
    import time

    deadline = time.monotonic() + timeout_s
    time.sleep(poll_s)  # let it go down
    while True:
        try:
            fleet_session(project, contact, device).close()
            return
        except DeviceError:
            if time.monotonic() > deadline:
                raise DeviceError(f"{device}: did not come back within {timeout_s:.0f}s "
                                  "of its reboot") from None
            time.sleep(poll_s)


def installer_for(project: Project, contact: FirstContact, package: Path | None) -> Installer:
    """dpkg over SSH: how a real box gets the package (the lab brings its own installer,
    `fleet.lab.bootstrap`, chosen by the CLI: the domain never imports the lab)."""
    if package is None or not package.is_file():
        raise UsageError("no package to install" if package is None
                         else f"no such package {package}",
                         fix="build one with `fleet device package --arch ARCH` and pass --package")
    return DebianInstaller(package, contact.user)


# ---------------------------------------------------------------- identity


def remote_root(session: SSHSession) -> PurePosixPath:
    """The box's FLEET_ROOT (``/`` on a real box)."""
    text = run(session, ["sh", "-c", 'printf "%s" "${FLEET_ROOT:-/}"'], "reading FLEET_ROOT")
    return PurePosixPath(text or "/")


def _under(root: PurePosixPath, path: Path) -> str:
    """A device path (as Layout(/) names it) under the box's root."""
    return str(root / path.relative_to("/"))


def _put(session: SSHSession, data: bytes, remote: str, mode: int) -> None:
    run(session, ["mkdir", "-p", str(PurePosixPath(remote).parent)], f"making {remote}'s folder")
    with session.sftp.open(remote, "wb") as fh:
        fh.write(data)
    session.sftp.chmod(remote, mode)


def pin_trust_anchor(session: SSHSession, project: Project, root: PurePosixPath) -> None:
    """The fleet CA as the box's provisioning trust anchor, as the factory pins it."""
    anchor = fmt.trust_anchor_path(Layout(Path("/")))
    line = fmt.cert_fingerprint(pki.load_ca_cert(project)) + "\n"
    _put(session, line.encode(), _under(root, anchor), 0o644)


def refuse_if_provisioned(agent: Agent, device: str) -> None:
    try:
        info = agent.call("info")
    except DeviceError as exc:
        if "not-provisioned" in str(exc):
            return
        raise
    raise UsageError(f"{device}: the box already has an edgefleet identity ({info.get('name')})",
                     fix="bootstrap is for boxes without one; use `fleet provision` to replace it")


def install_identity(session: SSHSession, agent: Agent, archive: Path,
                     root: PurePosixPath) -> dict[str, Any]:
    """The archive on a folder of the box, read by its own first-boot code, then removed."""
    drive = str(root / "var/lib/fleet/staging/bootstrap")
    _put(session, archive.read_bytes(), f"{drive}/{archive.name}", 0o600)
    try:
        return agent.call("provision", "--usb", drive)
    finally:
        run(session, ["rm", "-rf", drive], "removing the archive")


def close_first_contact(session: SSHSession, contact: FirstContact,
                        root: PurePosixPath) -> list[str]:
    """Keys only from now on: password login off, the fleet's host key and authorized keys;
    the key used for first contact leaves the user's authorized_keys."""
    ssh = root / "etc/fleet/ssh"
    drop_in = ("# Written by `fleet device bootstrap`: the fleet's keys only.\n"
               f"HostKey {ssh / 'ssh_host_ed25519_key'}\n"
               f"AuthorizedKeysFile .ssh/authorized_keys {ssh / 'authorized_keys'}\n"
               "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
               "PermitRootLogin prohibit-password\n")
    _put(session, drop_in.encode(), str(root / DROP_IN), 0o644)
    done = ["password login off"]
    if contact.key is not None and root == PurePosixPath("/"):
        # (A lab device's SFTP home is this machine's: its first-contact key is not there.)
        done.append(_drop_authorized_key(session, contact.key))
    return done


def _drop_authorized_key(session: SSHSession, key_file: Path) -> str:
    blob = paramiko.PKey.from_path(str(key_file)).get_base64()
    path = ".ssh/authorized_keys"  # SFTP paths start in the user's home
    try:
        with session.sftp.open(path, "rb") as fh:
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:  # paramiko's IOError: no such file, nothing to remove
        return "first-contact key: no ~/.ssh/authorized_keys"
    kept = [line for line in lines if blob not in line.split()]
    with session.sftp.open(path, "wb") as fh:
        fh.write(("\n".join(kept) + "\n" if kept else "").encode())
    return f"first-contact key removed ({len(lines) - len(kept)} line(s))"


def fleet_session(project: Project, contact: FirstContact, device: str) -> SSHSession:
    """The controller's own login: pinned host key, controller key."""
    return SSHSession.connect(device, contact.host, contact.port, contact.user,
                              controller_key(project), project.known_hosts)


# ---------------------------------------------------------------- the whole


@dataclass
class Bootstrap:
    project: Project
    ca: pki.FleetCA
    contact: FirstContact
    spec: prov.DeviceSpec
    installer: Installer
    out_dir: Path
    steps: list[dict[str, Any]] = field(default_factory=list)

    def step(self, name: str, detail: Any) -> None:
        self.steps.append({"step": name, "detail": detail})

    def run(self, confirmed: OfferedKey) -> dict[str, Any]:
        name = self.spec.name
        session = open_session(self.contact, confirmed, name)
        try:
            self.step("login", f"{self.contact.user}@{self.contact.host}:{self.contact.port}")
            self.step("install", self.installer.install(session))
            agent = Agent(session, name, "fleet-agent")
            refuse_if_provisioned(agent, name)
            root = remote_root(session)
            pin_trust_anchor(session, self.project, root)
            self.step("trust anchor", "fleet CA pinned")
            built = self._archive()
            answer = install_identity(session, agent, built.path, root)
            self.step("identity", f"installed (certificate {answer.get('certificate') or 'ok'})")
            self.step("ssh", close_first_contact(session, self.contact, root))
            self.installer.restart(session, self.project, self.contact, name)
        finally:
            session.close()
        return self._finish(name)

    def _archive(self) -> prov.BuiltArchive:
        report = prov.build_archives(self.project, self.ca, [self.spec],
                                     prov.BuildSettings(self.out_dir))
        if report.skipped or report.failed:
            why = report.failed.get(self.spec.name) or report.skipped.get(self.spec.name)
            raise UsageError(f"{self.spec.name}: no archive built: {why}")
        built = report.built[0]
        self.step("host key", f"pinned {prov.ssh_fingerprint(built.host_key)}")
        return built

    def _finish(self, name: str) -> dict[str, Any]:
        session = fleet_session(self.project, self.contact, name)
        try:
            info = Agent(session, name, "fleet-agent").call("info")
        finally:
            session.close()
        self.step("back", f"answers as {info.get('name')} with its new key")
        self.step("registry", f"PROVISIONED ({prov.mark_provisioned(self.project, name)})")
        return {"device": name, "steps": self.steps, "info": info}
