"""The console's guards: sessions with CSRF tokens, login rate limits, response headers,
and the rule that a non-loopback address needs TLS.

Sessions live in memory: restarting `fleet serve` logs everyone out, which is
the safe direction. A session id is 256 random bits in an HttpOnly,
SameSite=Strict cookie (Secure under TLS); its CSRF token is another 256 bits
that every form and every state-changing request must carry back.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from fleet.console.users import User
from fleet.errors import UsageError

COOKIE = "fleet_session"
SESSION_TTL_S = 8 * 3600
# Five wrong passwords in five minutes, from one address or for one name, then wait.
LOGIN_FAILURES, LOGIN_WINDOW_S = 5, 300.0

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


@dataclass
class Session:
    user: User
    csrf: str
    expires: float


@dataclass
class Sessions:
    """Session id -> Session, in memory, thread-safe."""

    ttl: float = SESSION_TTL_S
    _by_id: dict[str, Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, user: User) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        session = Session(user, secrets.token_urlsafe(32), time.monotonic() + self.ttl)
        with self._lock:
            self._by_id[sid] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        with self._lock:
            session = self._by_id.get(sid)
            if session is not None and session.expires < time.monotonic():
                del self._by_id[sid]
                return None
            return session

    def end(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)


def csrf_ok(session: Session, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(session.csrf, str(given))


@dataclass
class LoginLimiter:
    """Counts failed logins per key (client address, user name) in a sliding window."""

    failures: int = LOGIN_FAILURES
    window: float = LOGIN_WINDOW_S
    _seen: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __len__(self) -> int:
        """How many keys it remembers (only those with a failure in the window)."""
        with self._lock:
            return len(self._seen)

    def _recent(self, key: str, now: float) -> deque[float]:
        # read-only: asking about a key never stores it, and a key whose failures have all
        # expired is forgotten, so made-up names cannot fill the memory
        times = self._seen.get(key, deque())
        while times and times[0] < now - self.window:
            times.popleft()
        if not times:
            self._seen.pop(key, None)
        return times

    def blocked(self, *keys: str) -> float:
        """Seconds to wait before another attempt (0: go ahead)."""
        now = time.monotonic()
        with self._lock:
            waits = [t[0] + self.window - now for k in keys
                     if len(t := self._recent(k, now)) >= self.failures]
        return max(waits, default=0.0)

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                times = self._recent(key, now)
                times.append(now)
                self._seen[key] = times

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._seen.pop(key, None)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen(host: str, tls: bool, insecure: bool) -> None:
    """Refuse a non-loopback address without TLS unless the operator said --insecure."""
    if is_loopback(host) or tls or insecure:
        return
    raise UsageError(
        f"refusing to serve on {host} without TLS: passwords and session cookies would "
        "cross the network in clear",
        fix="give --tls-cert and --tls-key, or serve on 127.0.0.1 behind your own TLS proxy "
            "(or --insecure on a network you trust)")
