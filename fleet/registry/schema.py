"""The registry database schema as an ordered list of migrations (``PRAGMA user_version``).

Never edit a released migration: append a new one. `migrate` applies the missing
ones in one transaction each, so a crash leaves the database at a known version.
"""

from __future__ import annotations

import sqlite3

from fleet.errors import ConfigError

MIGRATIONS: tuple[str, ...] = (
    # 1: sites, devices, cameras, history
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE sites (name TEXT PRIMARY KEY, created_at REAL NOT NULL);
    CREATE TABLE devices (
        name TEXT PRIMARY KEY,
        site TEXT NOT NULL REFERENCES sites(name),
        serial TEXT, hardware TEXT, arch TEXT, hostname TEXT, port INTEGER,
        provisioning TEXT NOT NULL DEFAULT 'AWAITING_PROVISIONING',
        connection TEXT NOT NULL DEFAULT 'NOT_AVAILABLE',
        software_current TEXT, software_target TEXT,
        cert_fingerprint TEXT, host_key_fingerprint TEXT,
        tags TEXT NOT NULL DEFAULT '{}',
        last_seen REAL, created_at REAL NOT NULL, updated_at REAL NOT NULL
    );
    CREATE INDEX devices_site ON devices(site);
    CREATE TABLE cameras (
        name TEXT PRIMARY KEY,
        device TEXT NOT NULL REFERENCES devices(name) ON DELETE RESTRICT,
        rtsp_url TEXT NOT NULL,
        username TEXT NOT NULL DEFAULT '',
        password_ref TEXT,
        description TEXT NOT NULL DEFAULT '',
        codec TEXT,
        status TEXT NOT NULL DEFAULT 'UNPROBED',
        tags TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL, updated_at REAL NOT NULL
    );
    CREATE INDEX cameras_device ON cameras(device);
    CREATE TABLE history (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        subject TEXT NOT NULL,
        kind TEXT NOT NULL,
        event TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX history_subject ON history(subject, id);
    """,
    # 2: probe details, and the app a camera feeds (for the per-app camera limit)
    """
    ALTER TABLE cameras ADD COLUMN status_detail TEXT NOT NULL DEFAULT '';
    ALTER TABLE cameras ADD COLUMN probed_at REAL;
    ALTER TABLE cameras ADD COLUMN app TEXT NOT NULL DEFAULT '';
    UPDATE cameras SET app = COALESCE(json_extract(tags, '$.app'), '');
    CREATE INDEX cameras_device_app ON cameras(device, app);
    """,
)

VERSION = len(MIGRATIONS)


def version_of(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, path: str, *, target: int = VERSION) -> int:
    """Bring the database up to `target`; refuse one written by a newer edgefleet."""
    current = version_of(conn)
    if current > VERSION:
        raise ConfigError(
            f"registry schema version {current} is newer than this edgefleet supports ({VERSION})",
            where=path,
            fix="upgrade edgefleet on this controller",
        )
    for number in range(current + 1, target + 1):
        _apply(conn, number)
    return version_of(conn)


def _apply(conn: sqlite3.Connection, number: int) -> None:
    statements = [s.strip() for s in MIGRATIONS[number - 1].split(";") if s.strip()]
    conn.execute("BEGIN IMMEDIATE")
    try:
        if version_of(conn) >= number:  # another process migrated while we waited for the lock
            conn.execute("ROLLBACK")
            return
        for statement in statements:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {int(number)}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
