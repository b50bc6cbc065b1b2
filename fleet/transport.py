"""SSH to devices: a Nornir connection plugin on paramiko with pinned host keys.

* Host keys come only from the project's ``.fleet/known_hosts`` (OpenSSH
  format, ``[host]:port`` for non-22 ports). An unknown or changed key is
  refused, naming the device and both fingerprints; there is no auto-add.
* Commands are argv lists, joined with `shlex.join`: no shell string is ever
  built from user input.
* `put` uploads over SFTP, pipelined, into ``<remote>.part``; an interrupted
  upload resumes from the partial file's size, and the result is verified by
  SHA-256 on the device before it is renamed into place.

>>> session = SSHSession.connect("berlin-01", "127.0.0.1", 22001, "root", key, known)  # doctest: +SKIP
>>> session.exec(["fleet-agent", "info"]).rc                                           # doctest: +SKIP
0
"""

from __future__ import annotations

from fleet import paramiko_loader  # noqa: F401  # isort: skip  (first: see there)
import base64
import contextlib
import hashlib
import os
import shlex
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from fleet_runtime.durable import atomic_write_text, file_lock
from nornir.core.configuration import Config
from paramiko.sftp import CMD_WRITE, int64

from fleet import digests
from fleet.errors import DeviceError, HostKeyError
from fleet.openssh import Offsets, openssh_command, send_file

CONNECTION_NAME = "fleet_ssh"
CHUNK = 32 * 1024  # SFTP's largest write request paramiko sends in one packet
WINDOW = 16 * 1024 * 1024
BIG_REQUEST = 252 * 1024  # under OpenSSH sftp-server's 256 KiB message limit
# exec_file hands a file to the system ssh from this size up: below it, a second
# connection (ssh's start-up, key exchange, sshd's session) costs more than
# OpenSSH's cipher saves over paramiko's on the connection already open.
OPENSSH_MIN_BYTES = 16 << 20


@dataclass
class ExecResult:
    rc: int
    stdout: bytes
    stderr: bytes


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(hostname: str, port: int) -> str:
    return hostname if port == 22 else f"[{hostname}]:{port}"


def pin_host_key(known_hosts: Path, hostname: str, port: int, public_openssh: str) -> None:
    """Pin `public_openssh` ("ssh-ed25519 AAAA...") for hostname:port, replacing any old pin."""
    pin_host_keys(known_hosts, {known_hosts_name(hostname, port): public_openssh})


# Marks a key pinned beside the one a running device still has (``--replace-identity``):
# both are accepted until the device first answers with this one, then the old one goes.
PENDING = "edgefleet-pending"


def pin_host_keys(known_hosts: Path, pins: dict[str, str], *, beside: bool = False) -> None:
    """Pin each ``known-hosts name -> "ssh-ed25519 AAAA..."`` in one locked write,
    replacing older pins for those names; with `beside`, keep them and add the new key
    as pending (see `PENDING`)."""
    with _known_hosts_lock(known_hosts):
        lines = known_hosts.read_text().splitlines() if known_hosts.exists() else []
        if beside:
            kept = [ln for ln in lines if not _pending_for(ln, pins)]
            kept += [f"{name} {' '.join(key.split()[:2])} {PENDING}" for name, key in pins.items()
                     if f"{name} {' '.join(key.split()[:2])}" not in kept]
        else:
            kept = [ln for ln in lines if ln.split(" ", 1)[0] not in pins]
            kept += [f"{name} {' '.join(key.split()[:2])}" for name, key in pins.items()]
        atomic_write_text(known_hosts, "\n".join(kept) + "\n", 0o600)


def _pending_for(line: str, names: dict[str, str]) -> bool:
    # An earlier pending key for the same host is replaced, not piled up.
    fields = line.split()
    return len(fields) > 3 and fields[0] in names and fields[3] == PENDING


def pinned_lines(known_hosts: Path, name: str) -> list[list[str]]:
    """The known_hosts entries for `name`, each as its fields (name, type, key[, mark])."""
    if not known_hosts.exists():
        return []
    rows = (ln.split() for ln in known_hosts.read_text().splitlines())
    return [f for f in rows if len(f) >= 3 and name in f[0].split(",")]


def settle_pending(known_hosts: Path, name: str, key_type: str, key_b64: str) -> bool:
    """The device answered with its pending key: it booted with its new identity, so that
    key alone stays pinned for `name`. True when something changed."""
    with _known_hosts_lock(known_hosts):
        lines = known_hosts.read_text().splitlines()
        ours = [f for f in (ln.split() for ln in lines) if len(f) >= 3 and f[0] == name]
        if not any(f[1:3] == [key_type, key_b64] and f[3:] == [PENDING] for f in ours):
            return False
        kept = [ln for ln in lines if ln.split(" ", 1)[0] != name]
        kept.append(f"{name} {key_type} {key_b64}")
        atomic_write_text(known_hosts, "\n".join(kept) + "\n", 0o600)
    return True


def unpin_host_key(known_hosts: Path, hostname: str, port: int) -> bool:
    name = known_hosts_name(hostname, port)
    if not known_hosts.exists():
        return False
    with _known_hosts_lock(known_hosts):
        lines = known_hosts.read_text().splitlines()
        kept = [ln for ln in lines if ln.split(" ", 1)[0] != name]
        atomic_write_text(known_hosts, "".join(f"{ln}\n" for ln in kept), 0o600)
    return len(kept) != len(lines)


@contextlib.contextmanager
def _known_hosts_lock(known_hosts: Path) -> Iterator[None]:
    """Pins change from many threads and processes at once (lab reboots, provisioning)."""
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(known_hosts.with_name(known_hosts.name + ".lock")):
        yield


def controller_key(project: Any) -> Path:
    """The controller's SSH key (`.fleet/id_ed25519`, 0600), created on first use."""
    path = Path(project.state_dir) / "id_ed25519"
    if not path.exists():
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
        pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                            serialization.PublicFormat.OpenSSH)
        atomic_write_text(path, pem.decode(), 0o600)
        path.with_suffix(".pub").write_text(pub.decode() + " edgefleet-controller\n")
    return path


def controller_public_key(project: Any) -> str:
    return controller_key(project).with_suffix(".pub").read_text().strip()


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom a session logged in: what the system's OpenSSH client needs."""

    hostname: str
    port: int
    username: str
    key_file: Path
    known_hosts: Path
    connect_timeout: float = 10


class SSHSession:
    """One authenticated SSH transport to one device."""

    def __init__(self, device: str, transport: paramiko.Transport, command_timeout: float,
                 endpoint: Endpoint | None = None) -> None:
        self.device = device
        self.transport = transport
        self.command_timeout = command_timeout
        self.endpoint = endpoint
        self.openssh_min_bytes = OPENSSH_MIN_BYTES
        self._sftp: paramiko.SFTPClient | None = None

    @classmethod
    def connect(cls, device: str, hostname: str, port: int, username: str, key_file: Path,
                known_hosts: Path, *, connect_timeout: float = 10, command_timeout: float = 120,
                keepalive: int = 15) -> SSHSession:
        try:
            sock = socket.create_connection((hostname, port), timeout=connect_timeout)
        except OSError as exc:
            raise DeviceError(f"{device}: cannot connect to {hostname}:{port}: {exc.strerror or exc}",
                              fix="check the device is powered and reachable") from exc
        transport = paramiko.Transport(sock, default_window_size=WINDOW,
                                       default_max_packet_size=CHUNK * 2)
        transport.set_keepalive(keepalive)
        try:
            transport.start_client(timeout=connect_timeout)
            _verify_host_key(device, hostname, port, transport.get_remote_server_key(), known_hosts)
            transport.auth_publickey(username, _load_key(key_file))
        except (paramiko.SSHException, EOFError, OSError) as exc:
            transport.close()
            raise DeviceError(f"{device}: SSH handshake with {hostname}:{port} failed: {exc}",
                              fix="check the device's SSH server and the controller key") from exc
        except HostKeyError:
            transport.close()
            raise
        return cls(device, transport, command_timeout,
                   Endpoint(hostname, port, username, key_file, known_hosts, connect_timeout))

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        self.transport.close()

    def exec(self, argv: list[str], *, stdin: bytes | IO[bytes] | None = None,
             timeout: float | None = None,
             on_stderr_line: Callable[[bytes], None] | None = None) -> ExecResult:
        """Run `argv` (each argument quoted) and collect its output; a timeout is a DeviceError."""
        chan = self.transport.open_session(timeout=timeout or self.command_timeout)
        try:
            chan.exec_command(shlex.join(argv))
            if stdin is not None:
                _feed(chan, stdin)
            chan.shutdown_write()
            return _collect(chan, self.device, argv[:2], timeout or self.command_timeout,
                            on_stderr_line)
        finally:
            chan.close()

    def exec_file(self, argv: list[str], src: IO[bytes], *, timeout: float | None = None,
                  progress: Callable[[int], None] | None = None) -> ExecResult:
        """`exec` with an open file as stdin, sent by the system's OpenSSH client when it
        is installed and the rest of the file is at least `openssh_min_bytes` (its ciphers
        run well ahead of paramiko's), logging in with the same key and accepting only
        the same pinned known_hosts; over this paramiko connection otherwise.

        `progress(offset)` gets the file's offset as it is sent, on this thread, so an
        exception it raises stops the transfer (the device keeps what it received)."""
        left = os.fstat(src.fileno()).st_size - src.tell()
        big = left >= self.openssh_min_bytes
        command = openssh_command(self.endpoint) if self.endpoint and big else None
        if command is None:
            fed = Offsets(src, progress) if progress is not None else src
            return self.exec(argv, stdin=cast(IO[bytes], fed), timeout=timeout)
        limit = timeout or self.command_timeout
        try:
            rc, out, err = send_file([*command, shlex.join(argv)], src,
                                     time.monotonic() + limit, progress)
        except subprocess.TimeoutExpired as exc:
            raise DeviceError(f"{self.device}: `{shlex.join(argv[:2])}` timed out after "
                              f"{limit:.0f}s", fix="raise ssh.command_timeout in fleet.yaml "
                              "or check the device") from exc
        if rc == 255 and not out:  # ssh's own failure, not the command's
            raise DeviceError(f"{self.device}: ssh failed: "
                              f"{err.decode(errors='replace').strip()[-300:]}",
                              fix="check the device's SSH server and its pinned host key")
        return ExecResult(rc, out, err)

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = paramiko.SFTPClient.from_transport(self.transport, window_size=WINDOW,
                                                            max_packet_size=CHUNK * 2)
            assert self._sftp is not None
        return self._sftp

    def put(self, local: Path, remote: str, *, verify: Callable[[str], str],
            progress: Callable[[int, int], None] | None = None,
            receive: Receiver | None = None) -> str:
        """Upload `local` to `remote`, resuming a partial upload; returns the SHA-256.

        `verify(path)` returns the SHA-256 of a file on the device (the agent's
        `checksum`): a mismatch deletes the partial file and raises. With `receive`
        (the agent's, see `Receiver`) the bytes stream into the device, which hashes
        them as they arrive; `verify` is then not called.
        """
        total = local.stat().st_size
        part = remote + ".part"
        offset = self._partial_size(part, total)
        placed = False
        if receive is not None:
            expected, got = self._streamed(local, remote, offset, receive, progress)
            actual, placed = got.sha256, got.placed
        else:
            expected = self._sftp_put(local, part, offset, total, progress)
            actual = verify(part)
        if actual != expected:
            digests.forget(local)  # ours may be the stale one: the next try hashes afresh
            self.sftp.remove(part)
            raise DeviceError(f"{self.device}: upload of {local.name} failed verification "
                              f"(sha256 {actual[:12]}… != {expected[:12]}…)",
                              fix="run the command again; the upload restarts from zero")
        if not placed:  # the device renamed it when it had our hash to compare (--expect)
            self.sftp.posix_rename(part, remote)
        return expected

    def _sftp_put(self, local: Path, part: str, offset: int, total: int,
                  progress: Callable[[int, int], None] | None) -> str:
        digest = hashlib.sha256()
        with local.open("rb") as src, self.sftp.open(part, "ab" if offset else "wb") as dst:
            _hash_prefix(src, offset, digest)
            _WindowedWriter(self.sftp, dst, self._request_size()).copy(src, offset, total,
                                                                       digest, progress)
        return digest.hexdigest()

    def _streamed(self, local: Path, remote: str, offset: int, receive: Receiver,
                  progress: Callable[[int, int], None] | None) -> tuple[str, Received]:
        """(our SHA-256, the device's answer) for a stream through `receive`. Ours is the one
        remembered for this version of the file (fleet.digests), sent along so the device
        compares and renames, or computed on a thread while the bytes travel, so neither
        side reads the file twice."""
        total = local.stat().st_size
        known = digests.remembered(local)
        hasher = digests.Hasher(local) if known is None else None
        try:
            with local.open("rb") as src:
                src.seek(offset)
                actual = receive(self, remote, offset, src, _of(progress, total), known)
        finally:
            ours = hasher.result() if hasher is not None else known
        assert ours is not None
        return ours, actual

    def _request_size(self) -> int:
        # OpenSSH's sftp-server takes messages up to 256 KiB; others get SFTP's 32 KiB.
        return BIG_REQUEST if "OpenSSH" in (self.transport.remote_version or "") else CHUNK

    def _partial_size(self, part: str, total: int) -> int:
        try:
            size = self.sftp.stat(part).st_size or 0
        except FileNotFoundError:
            return 0
        return size if size <= total else 0

    def get(self, remote: str, local: Path) -> None:
        self.sftp.get(remote, str(local))


@dataclass(frozen=True)
class Received:
    sha256: str  # the device's hash of the whole ``.part``
    placed: bool  # it matched the hash sent along, and the device renamed it into place


# `receive(session, remote, offset, src, progress, expect)`: stream `src` into ``remote.part``
# from `offset` on the device; the SHA-256 of the whole ``.part``, and whether the device
# renamed it to `remote` because it matched `expect` (fleet.agent.Agent.receive);
# `progress(offset)`, when given, as the bytes go out.
Receiver = Callable[["SSHSession", str, int, IO[bytes], Callable[[int], None] | None,
                     str | None], Received]
def _of(progress: Callable[[int, int], None] | None, total: int) -> Callable[[int], None] | None:
    """`put`'s (done, total) progress as the (offset) progress a receiver reports."""
    if progress is None:
        return None
    return lambda done: progress(done, total)


def _hash_prefix(src: IO[bytes], offset: int, digest: Any) -> None:
    """Hash the part of the file already on the device (the resume case)."""
    left = offset
    while left:
        block = src.read(min(left, 1 << 20))
        digest.update(block)
        left -= len(block)


class _WindowedWriter:
    """SFTP writes with a bounded window of requests in flight.

    paramiko's own pipelined `write` lets requests pile up and then drains
    them all at once, which stalls the link; a fixed window keeps it full.
    Uses paramiko's request/response primitives (`_async_request`,
    `_read_response`), the same ones its SFTPFile is built on.
    """

    IN_FLIGHT = 32

    def __init__(self, sftp: paramiko.SFTPClient, dst: paramiko.SFTPFile, request: int) -> None:
        self.sftp, self.handle, self.request = sftp, dst.handle, request
        self.pending: deque[int] = deque()

    def copy(self, src: IO[bytes], offset: int, total: int, digest: Any,
             progress: Callable[[int, int], None] | None) -> None:
        done = offset
        while block := src.read(self.request):
            digest.update(block)
            self.pending.append(self.sftp._async_request(  # noqa: SLF001
                type(None), CMD_WRITE, self.handle, int64(done), block))
            done += len(block)
            while len(self.pending) >= self.IN_FLIGHT:
                self._settle()
            if progress:
                progress(done, total)
        while self.pending:
            self._settle()

    def _settle(self) -> None:
        self.sftp._read_response(self.pending.popleft())  # noqa: SLF001  raises on error status


def _feed(chan: paramiko.Channel, stdin: bytes | IO[bytes]) -> None:
    if isinstance(stdin, bytes):
        chan.sendall(stdin)
        return
    while block := stdin.read(CHUNK * 8):
        chan.sendall(block)


def _collect(chan: paramiko.Channel, device: str, what: list[str], timeout: float,
             on_stderr_line: Callable[[bytes], None] | None) -> ExecResult:
    out, err, pending = bytearray(), bytearray(), b""
    deadline = time.monotonic() + timeout
    chan.settimeout(0.2)
    while True:
        got = False
        if chan.recv_ready():
            out += chan.recv(65536)
            got = True
        if chan.recv_stderr_ready():
            data = chan.recv_stderr(65536)
            err += data
            got = True
            if on_stderr_line:
                pending = _lines(pending + data, on_stderr_line)
        if not got:
            if _all_received(chan):
                break
            if time.monotonic() > deadline:
                raise DeviceError(f"{device}: `{shlex.join(what)}` timed out after {timeout:.0f}s",
                                  fix="raise ssh.command_timeout in fleet.yaml or check the device")
            if chan.status_event.is_set():
                time.sleep(0.02)  # exited, output still on its way: poll, do not spin
            else:
                chan.status_event.wait(0.05)
    return ExecResult(chan.recv_exit_status(), bytes(out), bytes(err))


def _all_received(chan: paramiko.Channel) -> bool:
    """The command exited and its output is all here. sshd sends the exit status as soon
    as the command exits, possibly ahead of output still queued behind a slow or
    congested link, so wait for the channel's EOF too (as OpenSSH's client does; the
    command timeout bounds it). No quiet period stands in for EOF: on a shared uplink a
    stream can stall for many seconds and still be incomplete."""
    if not chan.exit_status_ready() or chan.recv_ready() or chan.recv_stderr_ready():
        return False
    return bool(chan.eof_received or chan.closed)


def _lines(buffer: bytes, sink: Callable[[bytes], None]) -> bytes:
    *complete, rest = buffer.split(b"\n")
    for line in complete:
        sink(line)
    return rest


def _load_key(path: Path) -> paramiko.PKey:
    return paramiko.PKey.from_path(str(path))


def _verify_host_key(device: str, hostname: str, port: int, offered: paramiko.PKey,
                     known_hosts: Path) -> None:
    """Accept only a pinned key. Every line for the host counts (paramiko's HostKeys keeps
    one key per type): a device whose identity is being replaced has two."""
    name = known_hosts_name(hostname, port)
    pinned = pinned_lines(known_hosts, name) or _hashed_lines(known_hosts, name)
    if not pinned:
        raise HostKeyError(
            f"{device}: host key for {name} is not pinned (device offers {fingerprint(offered)})",
            where=str(known_hosts),
            fix="provision the device (its key is pinned from the archive); keys are never trusted on first use")
    offer = [offered.get_name(), base64.b64encode(offered.asbytes()).decode()]
    match = next((f for f in pinned if f[1:3] == offer), None)
    if match is None:
        want = next((f for f in pinned if f[1] == offer[0]), pinned[0])
        raise HostKeyError(
            f"{device}: HOST KEY CHANGED for {name}: pinned {_fingerprint_b64(want[2])}, "
            f"device offers {fingerprint(offered)}",
            where=str(known_hosts),
            fix="if the device was re-provisioned, re-pin its key from the new archive; otherwise investigate")
    if match[3:] == [PENDING]:
        settle_pending(known_hosts, name, *offer)


def _hashed_lines(known_hosts: Path, name: str) -> list[list[str]]:
    # Entries hashed by `ssh-keygen -H` (we write plain names, an operator may hash them).
    if not known_hosts.exists():
        return []
    found = paramiko.HostKeys(str(known_hosts)).lookup(name) or {}
    return [[name, kind, key.get_base64()] for kind, key in found.items()]


def _fingerprint_b64(key_b64: str) -> str:
    try:
        digest = hashlib.sha256(base64.b64decode(key_b64)).digest()
    except ValueError:
        return "(unreadable pin)"
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class FleetSSH:
    """Nornir connection plugin ``fleet_ssh``: `connection` is an SSHSession."""

    def __init__(self) -> None:
        self._session: SSHSession | None = None

    def open(self, hostname: str | None, username: str | None, password: str | None,
             port: int | None, platform: str | None, extras: dict[str, Any] | None = None,
             configuration: Config | None = None) -> None:
        ex = extras or {}
        self._session = SSHSession.connect(
            ex.get("device", hostname or "?"), hostname or "", port or 22, username or "root",
            Path(ex["key_file"]), Path(ex["known_hosts"]),
            connect_timeout=float(ex.get("connect_timeout", 10)),
            command_timeout=float(ex.get("command_timeout", 120)),
            keepalive=int(ex.get("keepalive", 15)),
        )

    def close(self) -> None:
        if self._session is not None:
            self._session.close()

    @property
    def connection(self) -> SSHSession:
        assert self._session is not None
        return self._session


def register_plugin() -> None:
    """Make `fleet_ssh` known to Nornir even without the package's entry point."""
    from nornir.core.plugins.connections import ConnectionPluginRegister

    ConnectionPluginRegister.register(CONNECTION_NAME, FleetSSH)  # type: ignore[arg-type]


with contextlib.suppress(Exception):  # already registered through the entry point
    register_plugin()
