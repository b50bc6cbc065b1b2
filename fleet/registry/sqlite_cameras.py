"""The registry's cameras: RTSP sources bound to devices, passwords sealed at rest.

A password is sealed with the project's SecretBox (fleet/secrets.py) and bound
to the camera's name; records never carry it (``password`` is ``***`` or empty).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fleet.errors import ConfigError
from fleet.registry import CAMERA_STATUSES, Camera, NotFound
from fleet.registry.sqlite_db import Database, iso
from fleet.registry.sqlite_history import History
from fleet.secrets import Rotation, SecretBox, mask, rotate_key, secret_box

SELECT = (
    "SELECT c.name, c.device, d.site, c.rtsp_url, c.username, c.password_ref, c.description, "
    "c.codec, c.status, c.status_detail, c.tags, c.probed_at, c.created_at, c.updated_at "
    "FROM cameras c JOIN devices d ON d.name = c.device"
)
RECORD_KEYS = ("name", "device", "site", "rtsp_url", "username", "password", "description",
               "codec", "status", "status_detail", "tags", "probed_at", "created_at",
               "updated_at")


class Cameras:
    def __init__(self, db: Database, history: History, state_dir: Path):
        self.db, self.history, self.state_dir = db, history, state_dir
        self._box: SecretBox | None = None

    @property
    def box(self) -> SecretBox:
        if self._box is None:
            self._box = secret_box(self.state_dir)
        return self._box

    # ---- reads -------------------------------------------------------------------------

    def names(self) -> set[str]:
        return {r[0] for r in self.db.rows("SELECT name FROM cameras")}

    def counts(self) -> dict[tuple[str, str], int]:
        """Cameras per (device, app); app is the camera's ``app`` tag, '' when untagged."""
        rows = self.db.rows("SELECT device, app, COUNT(*) FROM cameras GROUP BY device, app")
        return {(d, a): n for d, a, n in rows}

    def devices(self) -> dict[str, tuple[str, str]]:
        """camera name -> (device, app), for limit checks on update."""
        return {n: (d, a) for n, d, a in self.db.rows("SELECT name, device, app FROM cameras")}

    def get(self, name: str) -> dict[str, Any] | None:
        rows = self.db.rows(f"{SELECT} WHERE c.name = ?", (name,))
        return _record(rows[0]) if rows else None

    def find(
        self, *, devices: Iterable[str] = (), sites: Iterable[str] = (), names: Iterable[str] = ()
    ) -> list[dict[str, Any]]:
        devices, sites, names = set(devices), set(sites), set(names)
        rows = self.db.rows(f"{SELECT} ORDER BY d.site, c.device, c.name")
        return [
            _record(r)
            for r in rows
            if (not devices or r[1] in devices)
            and (not sites or r[2] in sites)
            and (not names or r[0] in names)
        ]

    def password_ref(self, name: str) -> str | None:
        rows = self.db.rows("SELECT password_ref FROM cameras WHERE name = ?", (name,))
        row = rows[0] if rows else None
        if row is None:
            raise NotFound(
                f"camera '{name}' is not registered", fix="list cameras with `fleet cameras list`"
            )
        return row[0]  # type: ignore[no-any-return]

    def password(self, name: str) -> str:
        """The camera's password in clear ('' when it has none). Never print it."""
        ref = self.password_ref(name)
        return self.box.open(ref, aad=f"camera:{name}") if ref else ""

    def on_device(self, device: str) -> list[str]:
        """Names of the device's cameras (inside a transaction: what a deletion would take)."""
        rows = self.db.conn.execute(
            "SELECT name FROM cameras WHERE device = ? ORDER BY name", (device,))
        return [r[0] for r in rows]

    # ---- writes ------------------------------------------------------------------------

    def seal_passwords(self, cameras: list[Camera]) -> list[str | None]:
        box = self.box
        return [
            box.seal(c.password, aad=f"camera:{c.name}") if c.password else None for c in cameras
        ]

    def write(self, creates: list[Camera], updates: list[Camera]) -> None:
        """Insert `creates` and replace `updates` in one transaction (all or nothing)."""
        with self.db.transaction():
            self.write_rows(creates, updates, self.seal_passwords(creates + updates))

    def write_rows(
        self, creates: list[Camera], updates: list[Camera], refs: list[str | None]
    ) -> None:
        """The rows of `write`, inside the caller's transaction, with the password refs given."""
        now = time.time()
        rows = [_row(c, ref, now) for c, ref in zip(creates + updates, refs, strict=True)]
        self.db.conn.executemany(
            "INSERT INTO cameras(name, device, rtsp_url, username, password_ref, description, "
            "tags, app, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows[: len(creates)],
        )
        self.db.conn.executemany(
            "UPDATE cameras SET device = ?2, rtsp_url = ?3, username = ?4, password_ref = ?5, "
            "description = ?6, tags = ?7, app = ?8, updated_at = ?10, codec = NULL, "
            "status = 'UNPROBED', status_detail = '' WHERE name = ?1",
            rows[len(creates) :],
        )
        self.history.log_many([
            (now, c.name, "camera", "imported" if i < len(creates) else "updated",
             json.dumps({"device": c.device}))
            for i, c in enumerate(creates + updates)
        ])

    def set_probe(self, name: str, status: str, codec: str | None, detail: str) -> None:
        if status not in CAMERA_STATUSES:
            raise ConfigError(f"unknown camera status '{status}'")
        with self.db.transaction():
            self.db.conn.execute(
                "UPDATE cameras SET status = ?, codec = COALESCE(?, codec), status_detail = ?, "
                "probed_at = ? WHERE name = ?",
                (status, codec, detail, time.time(), name),
            )

    def remove(self, names: Iterable[str]) -> list[str]:
        """Delete the named cameras; an unknown name removes nothing at all."""
        wanted = list(dict.fromkeys(names))
        with self.db.transaction():
            missing = [n for n in wanted if self.get(n) is None]
            if missing:
                raise NotFound(
                    f"camera(s) not registered: {', '.join(missing[:5])}",
                    fix="list cameras with `fleet cameras list`",
                )
            self.delete(wanted)
        return wanted

    def delete(self, names: list[str]) -> None:
        """Delete rows and log each, inside the caller's transaction."""
        self.db.conn.executemany("DELETE FROM cameras WHERE name = ?", [(n,) for n in names])
        for name in names:
            self.history.log(name, "camera", "removed")

    # ---- the secret key ----------------------------------------------------------------

    def count_secrets(self) -> int:
        """How many sealed secrets the registry holds (what a key rotation re-seals)."""
        rows = self.db.rows("SELECT COUNT(*) FROM cameras WHERE password_ref IS NOT NULL")
        return int(rows[0][0])

    def rotate_secret_key(self) -> Rotation:
        """A new key file, every camera password re-sealed with it (`fleet secrets rotate`)."""
        rotation = rotate_key(self.state_dir, self._reseal)
        self._box = None  # the next use reads the new key file
        return rotation

    def _reseal(self, current: SecretBox, new: SecretBox) -> int:
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT name, password_ref FROM cameras WHERE password_ref IS NOT NULL"
            ).fetchall()
            for name, ref in rows:
                aad = f"camera:{name}"
                conn.execute(
                    "UPDATE cameras SET password_ref = ? WHERE name = ?",
                    (new.seal(current.open(ref, aad=aad), aad=aad), name),
                )
        return len(rows)


def _row(c: Camera, ref: str | None, now: float) -> tuple[Any, ...]:
    tags = json.dumps(c.tags, sort_keys=True)
    return (c.name, c.device, c.rtsp_url, c.username, ref, c.description, tags,
            c.tags.get("app", ""), now, now)


def _record(row: tuple[Any, ...]) -> dict[str, Any]:
    rec = dict(zip(RECORD_KEYS, row, strict=True))
    rec["password"] = mask(rec["password"])  # the column holds the sealed reference
    rec["tags"] = json.loads(rec["tags"])
    for key in ("probed_at", "created_at", "updated_at"):
        rec[key] = iso(rec[key])
    return rec
