"""Processes the lab starts (SSH servers, mosquitto, device daemons): identify them
by PID *and* command line, stop them politely, wait for their ports.

>>> pid_runs(1234, "sshd", "/tmp/lab/berlin-01")   # doctest: +SKIP
False
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from fleet.errors import DeviceError

HOST = "127.0.0.1"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def pid_runs(pid: int, *words: str) -> bool:
    """Is `pid` alive and really ours (every word in its command line), not a reused PID?"""
    line = cmdline(pid)
    return bool(line) and all(w in line for w in words)


def marked(name: str, value: str, words: tuple[str, ...]) -> list[int]:
    """Live processes (not us) whose environment has ``name=value``, or whose command line
    has every one of `words`: how the lab finds what it started even when a PID was never
    recorded. (Both, because sshd overwrites its environment block with its title.)"""
    needle = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        ours = needle in environ.split(b"\0") or pid_runs(int(entry.name), *words)
        if ours and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie: a server started by another process may never be reaped by us."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def clean_env() -> dict[str, str]:
    """The environment for lab processes (mosquitto, device daemons): what a real box
    would have, never the controller's secrets such as FLEET_CA_PASSPHRASE."""
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "HOME", "USER", "LOGNAME", "TMPDIR", "PYTHONPATH",
            "COVERAGE_PROCESS_START")
    return {k: os.environ[k] for k in keep if k in os.environ}


def terminate(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM, wait (bounded), then SIGKILL."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap(pid)
        if not alive(pid):
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    reap(pid)


def wait_for_port(port: int, pid: int, log: Path, what: str, timeout: float = 15.0,
                  host: str = HOST) -> None:
    """Poll (bounded) until `port` accepts connections; report the server's log if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            reap(pid)
            if not alive(pid):
                break
            time.sleep(0.02)
    tail = log.read_text(errors="replace")[-400:] if log.exists() else ""
    raise DeviceError(f"{what} on port {port} did not start: {tail.strip()}",
                      fix=f"see {log}")


class Detached:
    """A child this process forked into a session of its own (see `fork_detached`); it
    waits like `subprocess.Popen.wait`, on a pidfd instead of polling."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._fd = os.pidfd_open(pid)

    def wait(self, timeout: float) -> int:
        """The child's exit code; `subprocess.TimeoutExpired` if it runs past `timeout`
        (it goes on running: it is detached)."""
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
        os.close(self._fd)
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)


def can_fork_detached() -> bool:
    """A fork copies one thread and every lock as it was at that instant: only a
    single-threaded process may run Python code in its child (and Linux's pidfd waits for it)."""
    return hasattr(os, "pidfd_open") and threading.active_count() == 1


def fork_detached(work: Callable[[], int], log: BinaryIO) -> Detached:
    """Run `work` in a forked child in a new session (it outlives this process, like a
    process started with ``start_new_session``), stdin from /dev/null, stdout and
    stderr into `log`; its return value is the exit code. No second interpreter starts
    and nothing is imported again, which is the point: the lab's power button forks its
    reboot instead of starting one more Python on the cores the lab shares (#19)."""
    if not can_fork_detached():
        raise RuntimeError("fork_detached needs a single-threaded process on Linux")
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return Detached(pid)
    code = 1
    try:  # the child: never returns into the caller's code
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        code = work()
    except BaseException:  # noqa: BLE001 - whatever happens, it ends here, in the log
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
