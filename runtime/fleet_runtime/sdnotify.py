"""systemd's notify protocol (``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``) with the stdlib.

Under ``Type=notify`` and ``WatchdogSec=`` systemd passes ``NOTIFY_SOCKET`` (a
datagram socket path, or ``@name`` in the abstract namespace) and
``WATCHDOG_USEC``; a service that stops sending ``WATCHDOG=1`` within that time
is killed and restarted. Outside systemd both are absent and every call here
does nothing, so the runtime behaves the same on a workstation.

>>> dog = Watchdog.from_env({})   # no systemd: nothing to notify
>>> dog is None
True
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping


def _address(env: Mapping[str, str]) -> str | None:
    path = env.get("NOTIFY_SOCKET", "")
    if not path or path[0] not in "/@":
        return None  # unset, or a vsock address we do not speak
    return "\0" + path[1:] if path[0] == "@" else path


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send one notification; False when there is no systemd to tell (or it is gone)."""
    address = _address(os.environ if env is None else env)
    if address is None:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(message.encode(), address)
        except OSError:  # the manager went away or the socket is not ours: nothing to tell
            return False
    return True


class Watchdog:
    """Pings ``WATCHDOG=1`` at half the interval systemd gave, from the loop it proves alive.

    ``kick()`` is called from the runtime's main wait loop, never from a thread of its own:
    if that loop hangs, the pings stop and systemd restarts the runtime.
    """

    def __init__(self, interval_s: float, env: Mapping[str, str]) -> None:
        self.every_s = interval_s / 2
        self.env = dict(env)
        self.last = float("-inf")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Watchdog | None:
        env = os.environ if env is None else env
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if _address(env) is None or not usec.isascii() or not usec.isdigit() or int(usec) == 0:
            return None
        if pid and pid != str(os.getpid()):
            return None  # meant for another process (we were started by the service's main one)
        return cls(int(usec) / 1e6, env)

    def kick(self, probe: Callable[[], object] | None = None) -> None:
        """Ping if one is due; `probe` (e.g. the runner's snapshot, which takes its locks)
        runs first, so a deadlocked pipeline blocks here and stops the pings."""
        now = time.monotonic()
        if now - self.last >= self.every_s:
            if probe is not None:
                probe()
            self.last = now
            notify("WATCHDOG=1", self.env)
