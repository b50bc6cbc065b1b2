"""The system OpenSSH client, for the bulk bytes of an upload (``SSHSession.exec_file``).

Its ciphers run well ahead of paramiko's. It logs in with the session's key and
accepts only the project's pinned known_hosts: no global file, no TOFU, no agent,
no user config. The file is spliced into ssh's stdin, so the bytes never pass
through Python; progress is reported as each pipe-full goes in.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from fleet.transport import Endpoint

PIPE_BYTES = 1 << 20
# AES-GCM first: the bulk copy's cost is its cipher, and AES runs in hardware on the
# controller (AES-NI) and on the devices we target (ARMv8 crypto extensions), while
# OpenSSH's default, chacha20-poly1305, computes its MAC in portable C
# (docs/benchmarks.md compares the two). OpenSSH's default set less aes192-ctr,
# in another order: a server without AES-GCM still agrees on one.
BULK_CIPHERS = ("aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"
                "aes128-ctr,aes256-ctr")


def openssh_command(end: Endpoint) -> list[str] | None:
    """The system ``ssh`` invocation for `end`, up to the remote command; None when ssh is
    not installed or a path or name could be misread on its command line. Only the
    project's pinned known_hosts count (no global file, no TOFU, no agent, no config)."""
    ssh = shutil.which("ssh")
    paths = (str(end.key_file), str(end.known_hosts))
    if ssh is None or end.hostname.startswith("-") or any(c in p for p in paths for c in '"%'):
        return None
    options = {
        "BatchMode": "yes", "StrictHostKeyChecking": "yes", "CheckHostIP": "no",
        "UserKnownHostsFile": f'"{end.known_hosts}"', "GlobalKnownHostsFile": "/dev/null",
        "UpdateHostKeys": "no", "IdentitiesOnly": "yes", "IdentityAgent": "none",
        "IdentityFile": f'"{end.key_file}"', "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no", "ControlMaster": "no", "ControlPath": "none",
        "ForwardAgent": "no", "ForwardX11": "no", "ClearAllForwardings": "yes",
        "ConnectTimeout": str(max(1, round(end.connect_timeout))), "LogLevel": "ERROR",
        "Ciphers": BULK_CIPHERS,
    }
    return [ssh, "-F", "/dev/null", "-T", *(f"-o{k}={v}" for k, v in options.items()),
            "-p", str(end.port), "-l", end.username, "--", end.hostname]


def send_file(command: list[str], src: IO[bytes], deadline: float,
              progress: Callable[[int], None] | None) -> tuple[int, bytes, bytes]:
    """Run `command` with the rest of `src` as its stdin; (exit status, stdout, stderr).

    The file is moved into ssh's stdin pipe by ``splice`` (no copy through Python), a
    pipe-full at a time, and `progress(offset)` is called after each move on this
    thread, so progress comes at the same points however fast the link is, and an
    exception it raises hangs up (the device keeps what it received, as when a link
    drops). TimeoutExpired once `deadline` passes."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out, stderr=err)
        try:
            assert proc.stdin is not None
            _pump(src, proc.stdin.fileno(), deadline, progress)
            proc.stdin.close()
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        finally:
            if proc.poll() is None:  # stopped by progress or the timeout: hang up
                proc.kill()
                proc.wait()
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read(), err.read()


def _pump(src: IO[bytes], pipe: int, deadline: float,
          progress: Callable[[int], None] | None) -> None:
    with contextlib.suppress(OSError):  # a 1 MiB pipe (Linux): fewer wake-ups per MB
        fcntl.fcntl(pipe, 1031, PIPE_BYTES)  # F_SETPIPE_SZ
    os.set_blocking(pipe, False)
    fd = src.fileno()
    offset, end = os.lseek(fd, 0, os.SEEK_CUR), os.fstat(fd).st_size
    while offset < end:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([], [pipe], [], left)[1]:
            raise subprocess.TimeoutExpired("ssh", 0)
        try:
            moved = _move(fd, pipe, offset, end - offset)
        except BlockingIOError:
            continue
        except BrokenPipeError:  # ssh ended early: its exit status and stderr say why
            return
        if moved == 0:
            return
        offset += moved
        os.lseek(fd, offset, os.SEEK_SET)
        if progress is not None:
            progress(offset)


def _move(fd: int, pipe: int, offset: int, count: int) -> int:
    """Bytes of `fd` from `offset` into `pipe`: splice (Linux), else one read and write."""
    if hasattr(os, "splice"):
        with contextlib.suppress(OSError):  # EINVAL: a file system without splice support
            return os.splice(fd, pipe, min(count, PIPE_BYTES), offset_src=offset)
    data = os.pread(fd, min(count, PIPE_BYTES), offset)
    return os.write(pipe, data) if data else 0


class Offsets:
    """A file fed to paramiko, reporting its offset after each read."""

    def __init__(self, src: IO[bytes], progress: Callable[[int], None]) -> None:
        self.src, self.progress = src, progress

    def read(self, size: int = -1) -> bytes:
        data = self.src.read(size)
        self.progress(self.src.tell())
        return data
