"""The registry database: one SQLite connection shared by the store's parts.

``.fleet/registry.db`` is opened with WAL, foreign keys, full sync and a busy
timeout, created 0600. Every part (devices, cameras, history) reads and writes
through one `Database`, so a transaction that spans parts (deregistering a
device removes its cameras and logs both) is still one transaction.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

NAME_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def valid_name(name: str) -> bool:
    """Panorama's rule for device and camera names: ``[A-Za-z0-9_-]``, 1 to 255 characters."""
    return 0 < len(name) <= 255 and NAME_OK.issuperset(name)


def iso(ts: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating 0600) the database with WAL, foreign keys and a busy timeout."""
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=10.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


class Database:
    """One connection, shared by Nornir worker threads: a transaction holds the lock, so
    statements of different threads never interleave inside one."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self._lock = threading.RLock()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it commits, or none of it."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """All rows of one read, under the lock."""
        with self._lock:
            return self.conn.execute(sql, args).fetchall()

    def close(self) -> None:
        self.conn.close()
