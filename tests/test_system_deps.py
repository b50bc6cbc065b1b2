"""scripts/system-deps.sh waits, and says so, while another package manager holds dpkg's lock.

The lock is a real POSIX lock (what apt and dpkg take) held by another process
on a file of our own, so the test needs neither root nor the real dpkg lock.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "system-deps.sh"
HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()  # hold the lock until the test closes our stdin
"""


def _hold(lock: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def _wait_lock(lock: Path, timeout: str = "300") -> subprocess.Popen[str]:
    env = {"PATH": "/usr/bin:/bin", "SYSTEM_DEPS_LOCKS": str(lock),
           "SYSTEM_DEPS_LOCK_TIMEOUT": timeout}
    return subprocess.Popen([str(SCRIPT), "--wait-lock"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_waits_for_a_held_dpkg_lock_and_says_so(tmp_path: Path) -> None:
    lock = tmp_path / "lock-frontend"
    holder = _hold(lock)
    script = _wait_lock(lock)
    assert script.stderr is not None
    first = script.stderr.readline()
    assert first.startswith("waiting for the dpkg lock"), first
    assert script.poll() is None  # still waiting while the lock is held
    holder.communicate("")  # the other package manager finishes
    out, rest = script.communicate(timeout=120)
    assert script.returncode == 0, rest
    assert "dpkg lock free after" in rest


def test_a_free_lock_costs_nothing(tmp_path: Path) -> None:
    lock = tmp_path / "lock-frontend"
    lock.touch()
    script = _wait_lock(lock)
    out, err = script.communicate(timeout=120)
    assert (script.returncode, err) == (0, "")


def test_gives_up_with_one_line_when_the_lock_stays_held(tmp_path: Path) -> None:
    lock = tmp_path / "lock-frontend"
    holder = _hold(lock)
    try:
        script = _wait_lock(lock, timeout="1")
        _, err = script.communicate(timeout=120)
    finally:
        holder.communicate("")
    assert script.returncode == 1
    assert err.splitlines()[-1].startswith("error: the dpkg lock is still held after 1s")
