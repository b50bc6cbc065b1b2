"""The system OpenSSH client, for the bulk bytes of an upload (``SSHSession.exec_file``).

Its ciphers run well ahead of paramiko's. It logs in with the session's key and
accepts only the project's pinned known_hosts: no global file, no TOFU, no agent,
no user config. The file goes to ssh as its stdin, so the bytes never pass
through Python; progress is the file offset ssh has reached (shared with us).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from fleet.transport import Endpoint

PROGRESS_EVERY_S = 0.25


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
    }
    return [ssh, "-F", "/dev/null", "-T", *(f"-o{k}={v}" for k, v in options.items()),
            "-p", str(end.port), "-l", end.username, "--", end.hostname]


def watch(proc: subprocess.Popen[bytes], src: IO[bytes], deadline: float,
          progress: Callable[[int], None] | None) -> tuple[bytes, bytes]:
    """Wait for `proc`, collecting its output, and report how far it has read `src` (the
    child shares the file's offset); TimeoutExpired once `deadline` passes."""
    while True:
        left = deadline - time.monotonic()
        try:
            return proc.communicate(timeout=max(0.0, min(left, PROGRESS_EVERY_S)))
        except subprocess.TimeoutExpired:
            if left <= PROGRESS_EVERY_S:
                raise
        if progress is not None:
            progress(os.lseek(src.fileno(), 0, os.SEEK_CUR))


class Offsets:
    """A file fed to paramiko, reporting its offset after each read."""

    def __init__(self, src: IO[bytes], progress: Callable[[int], None]) -> None:
        self.src, self.progress = src, progress

    def read(self, size: int = -1) -> bytes:
        data = self.src.read(size)
        self.progress(self.src.tell())
        return data
