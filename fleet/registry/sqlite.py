"""The embedded registry: ``.fleet/registry.db`` (SQLite, WAL, foreign keys, 0600).

Camera passwords are stored sealed with the project's SecretBox (fleet/secrets.py)
and bound to the camera's name; every change is appended to ``history``, which
outlives the devices and cameras it describes.

>>> reg = SQLiteRegistry.open(project)                               # doctest: +SKIP
>>> reg.upsert_device("b-01", site="berlin", hardware="orin", arch="aarch64")["status"]
'AWAITING_PROVISIONING'
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fleet.errors import ConfigError
from fleet.project import Project
from fleet.registry import (
    AWAITING_PROVISIONING,
    CAMERA_STATUSES,
    CONNECTION_STATUSES,
    DEVICE_FIELDS,
    NOT_AVAILABLE,
    ONLINE,
    PROVISIONED,
    PROVISIONING_STATUSES,
    SUCCEEDED,
    Camera,
    NotFound,
    RegisterResult,
)
from fleet.registry import hosts as inventory_hosts
from fleet.registry.schema import migrate
from fleet.secrets import Rotation, SecretBox, mask, rotate_key, secret_box

NAME_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_DEVICE_COLUMNS = (
    "name",
    "site",
    "serial",
    "hardware",
    "arch",
    "hostname",
    "port",
    "provisioning",
    "connection",
    "software_current",
    "software_target",
    "cert_fingerprint",
    "host_key_fingerprint",
    "tags",
    "last_seen",
    "created_at",
    "updated_at",
)
_CAMERA_SELECT = (
    "SELECT c.name, c.device, d.site, c.rtsp_url, c.username, c.password_ref, c.description, "
    "c.codec, c.status, c.status_detail, c.tags, c.probed_at, c.created_at, c.updated_at "
    "FROM cameras c JOIN devices d ON d.name = c.device"
)


def valid_name(name: str) -> bool:
    """Panorama's rule for device and camera names: ``[A-Za-z0-9_-]``, 1 to 255 characters."""
    return 0 < len(name) <= 255 and NAME_OK.issuperset(name)


def _iso(ts: float | None) -> str | None:
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


class SQLiteRegistry:
    """The default registry backend. Also the local cache of the aws backend."""

    backend = "sqlite"

    def __init__(self, conn: sqlite3.Connection, state_dir: Path, known_hosts: Path | None = None):
        self.conn, self.state_dir, self.known_hosts = conn, state_dir, known_hosts
        # One connection shared by Nornir worker threads: a transaction holds the lock, so
        # statements of different threads never interleave inside one.
        self._lock = threading.RLock()
        self._box: SecretBox | None = None

    @classmethod
    def open(cls, project: Project, filename: str = "registry.db") -> SQLiteRegistry:
        path = project.state_dir / filename
        conn = connect(path)
        migrate(conn, str(path))
        return cls(conn, project.state_dir, project.known_hosts)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> SQLiteRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def box(self) -> SecretBox:
        if self._box is None:
            self._box = secret_box(self.state_dir)
        return self._box

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

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """All rows of one read, under the lock."""
        with self._lock:
            return self.conn.execute(sql, args).fetchall()

    def _log(self, subject: str, kind: str, event: str, **detail: Any) -> None:
        self.conn.execute(
            "INSERT INTO history(at, subject, kind, event, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time(), subject, kind, event, json.dumps(detail, sort_keys=True)),
        )

    # ---- devices -------------------------------------------------------------------------

    def _device_row(self, name: str) -> dict[str, Any] | None:
        cols = ", ".join(_DEVICE_COLUMNS)
        rows = self._rows(f"SELECT {cols} FROM devices WHERE name = ?", (name,))  # noqa: S608
        return dict(zip(_DEVICE_COLUMNS, rows[0], strict=True)) if rows else None

    def _require_device(self, name: str) -> dict[str, Any]:
        row = self._device_row(name)
        if row is None:
            raise NotFound(
                f"device '{name}' is not registered",
                fix="register it with `fleet devices register`",
            )
        return row

    def get_device(self, name: str) -> dict[str, Any] | None:
        """The device's record, or None."""
        row = self._device_row(name)
        return self._device_record(row) if row else None

    def _device_record(self, row: dict[str, Any], cameras: int | None = None) -> dict[str, Any]:
        rec = dict(row)
        rec["tags"] = json.loads(row["tags"])
        rec["status"] = (
            row["connection"] if row["provisioning"] == PROVISIONED else row["provisioning"]
        )
        target, current = row["software_target"], row["software_current"]
        rec["update_needed"] = bool(target and target != current)
        for key in ("last_seen", "created_at", "updated_at"):
            rec[key] = _iso(row[key])
        if cameras is None:
            cameras = self._rows("SELECT COUNT(*) FROM cameras WHERE device = ?", (row["name"],))[
                0
            ][0]
        rec["cameras"] = cameras
        return rec

    def list_devices(
        self,
        *,
        sites: Iterable[str] = (),
        tags: Iterable[str] = (),
        names: Iterable[str] = (),
        statuses: Iterable[str] = (),
    ) -> list[dict[str, Any]]:
        """Devices filtered by site, tag (``key`` or ``key=value``), name and status."""
        sites, names, statuses = set(sites), set(names), set(statuses)
        wanted_tags = list(tags)
        cols = ", ".join(_DEVICE_COLUMNS)
        out = []
        counts = dict(self._rows("SELECT device, COUNT(*) FROM cameras GROUP BY device"))
        for row in self._rows(f"SELECT {cols} FROM devices ORDER BY site, name"):  # noqa: S608
            rec = self._device_record(
                dict(zip(_DEVICE_COLUMNS, row, strict=True)), counts.get(row[0], 0)
            )
            if (
                (not sites or rec["site"] in sites)
                and (not names or rec["name"] in names)
                and (
                    not statuses
                    or statuses & {rec["status"], rec["provisioning"], rec["connection"]}
                )
                and (not wanted_tags or any(_tag_matches(rec["tags"], t) for t in wanted_tags))
            ):
                out.append(rec)
        return out

    def upsert_device(self, name: str, **fields: Any) -> dict[str, Any]:
        """Create or update a device; `site` is needed to create one. Idempotent."""
        with self.transaction():
            self._upsert(name, fields)
        return self.get_device(name) or {}

    def _upsert(self, name: str, fields: Mapping[str, Any]) -> str:
        unknown = set(fields) - set(DEVICE_FIELDS)
        if unknown:
            raise ConfigError(
                f"unknown device field(s): {', '.join(sorted(unknown))}",
                fix=f"use {', '.join(DEVICE_FIELDS)}",
            )
        if not valid_name(name):
            raise ConfigError(
                f"invalid device name '{name[:60]}'",
                fix="use 1-255 characters from A-Z a-z 0-9 _ -",
            )
        values = {k: json.dumps(v, sort_keys=True) if k == "tags" else v for k, v in fields.items()}
        existing = self._device_row(name)
        if existing is None:
            return self._insert_device(name, values)
        changed = {k: v for k, v in values.items() if existing.get(k) != v}
        if not changed:
            return "unchanged"
        if "site" in changed:
            self._ensure_site(str(changed["site"]))
        sets = ", ".join(f"{k} = ?" for k in changed)
        self.conn.execute(
            f"UPDATE devices SET {sets}, updated_at = ? WHERE name = ?",  # noqa: S608
            (*changed.values(), time.time(), name),
        )
        self._log(name, "device", "updated", fields=sorted(changed))
        return "updated"

    def _insert_device(self, name: str, values: dict[str, Any]) -> str:
        if not values.get("site"):
            raise ConfigError(
                f"device '{name}' needs a site to be registered",
                fix="give it data.site in the inventory",
            )
        self._ensure_site(str(values["site"]))
        now = time.time()
        row = {
            "provisioning": AWAITING_PROVISIONING,
            "connection": NOT_AVAILABLE,
            "tags": "{}",
            **values,
            "name": name,
            "created_at": now,
            "updated_at": now,
        }
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self.conn.execute(f"INSERT INTO devices({cols}) VALUES ({marks})", tuple(row.values()))  # noqa: S608
        self._log(name, "device", "registered", site=values["site"])
        return "created"

    def _ensure_site(self, site: str) -> None:
        if not valid_name(site):
            raise ConfigError(
                f"invalid site name '{site[:60]}'", fix="use 1-255 characters from A-Z a-z 0-9 _ -"
            )
        self.conn.execute(
            "INSERT OR IGNORE INTO sites(name, created_at) VALUES (?, ?)", (site, time.time())
        )

    def set_device_status(self, name: str, status: str) -> None:
        """Set a provisioning status (AWAITING_PROVISIONING, PROVISIONED...) or a connection
        status (ONLINE, OFFLINE...). ONLINE also stamps ``last_seen``."""
        status = PROVISIONED if status == SUCCEEDED else status
        if status in CONNECTION_STATUSES:
            column = "connection"
        elif status in PROVISIONING_STATUSES:
            column = "provisioning"
        else:
            raise ConfigError(
                f"unknown device status '{status}'",
                fix=f"use one of {', '.join(PROVISIONING_STATUSES + CONNECTION_STATUSES)}",
            )
        with self.transaction():
            row = self._require_device(name)
            now = time.time()
            seen = now if status == ONLINE else row["last_seen"]
            self.conn.execute(
                f"UPDATE devices SET {column} = ?, last_seen = ?, updated_at = ? WHERE name = ?",  # noqa: S608
                (status, seen, now, name),
            )
            if row[column] != status:
                self._log(name, "device", "status", **{column: status, "was": row[column]})

    def _set_field(self, name: str, column: str, value: Any, event: str) -> None:
        with self.transaction():
            row = self._require_device(name)
            if row[column] == value:
                return
            self.conn.execute(
                f"UPDATE devices SET {column} = ?, updated_at = ? WHERE name = ?",  # noqa: S608
                (value, time.time(), name),
            )
            self._log(name, "device", event, value=value, was=row[column])

    def set_target_software(self, name: str, version: str | None) -> None:
        """The version a rollout wants the device to run."""
        self._set_field(name, "software_target", version, "software-target")

    def set_current_software(self, name: str, version: str | None) -> None:
        """The version the device reported running."""
        self._set_field(name, "software_current", version, "software-current")

    def tag_device(
        self, name: str, tags: Mapping[str, str], remove: Iterable[str] = ()
    ) -> dict[str, Any]:
        """Add or replace tags (``key=value``) and drop the keys in `remove`."""
        with self.transaction():
            row = self._require_device(name)
            merged = {**json.loads(row["tags"]), **tags}
            for key in remove:
                merged.pop(key, None)
            self._upsert(name, {"tags": merged})
        return self.get_device(name) or {}

    def set_device_certificate(self, name: str, cert_pem: str) -> dict[str, Any]:
        """Record the device certificate's SHA-256 fingerprint."""
        fingerprint = certificate_fingerprint(cert_pem)
        with self.transaction():
            self._require_device(name)
            self._upsert(name, {"cert_fingerprint": fingerprint})
        return {"fingerprint": fingerprint}

    def deregister_device(self, name: str, *, remove_cameras: bool = False) -> dict[str, Any]:
        """Delete the device (and, if asked, its cameras); its history stays."""
        with self.transaction():
            row = self._require_device(name)
            cams = [
                r[0]
                for r in self.conn.execute(
                    "SELECT name FROM cameras WHERE device = ? ORDER BY name", (name,)
                )
            ]
            if cams and not remove_cameras:
                raise ConfigError(
                    f"device '{name}' still has {len(cams)} camera(s)",
                    fix="remove them first or pass --remove-cameras",
                )
            self._delete_cameras(cams)
            self.conn.execute("DELETE FROM devices WHERE name = ?", (name,))
            self._log(
                name,
                "device",
                "deregistered",
                cert_fingerprint=row["cert_fingerprint"],
                cameras_removed=len(cams),
            )
        return {**row, "tags": json.loads(row["tags"]), "cameras_removed": cams}

    def register_from_inventory(self, nornir_or_hosts: Any) -> RegisterResult:
        """Register every inventory host (a Nornir object, a hosts mapping or an iterable).
        Idempotent: unchanged devices are left alone; statuses are never reset."""
        result = RegisterResult()
        entries = inventory_hosts.entries(nornir_or_hosts, self.known_hosts)
        with self.transaction():
            for name, fields in entries:
                row = self._device_row(name)
                if row is not None:
                    fields["tags"] = {**json.loads(row["tags"]), **fields["tags"]}
                outcome = self._upsert(name, fields)
                getattr(result, outcome).append(name)
        return result

    def history(self, subject: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first: ``{"at", "subject", "kind", "event", "detail"}``."""
        where, args = ("WHERE subject = ?", (subject,)) if subject else ("", ())
        rows = self._rows(
            f"SELECT at, subject, kind, event, detail FROM history {where} "  # noqa: S608
            "ORDER BY id DESC LIMIT ?",
            (*args, limit),
        )
        return [
            {"at": _iso(at), "subject": s, "kind": k, "event": e, "detail": json.loads(d)}
            for at, s, k, e, d in rows
        ]

    # ---- cameras -------------------------------------------------------------------------

    def camera_names(self) -> set[str]:
        return {r[0] for r in self._rows("SELECT name FROM cameras")}

    def camera_counts(self) -> dict[tuple[str, str], int]:
        """Cameras per (device, app); app is the camera's ``app`` tag, '' when untagged."""
        rows = self._rows("SELECT device, app, COUNT(*) FROM cameras GROUP BY device, app")
        return {(d, a): n for d, a, n in rows}

    def camera_devices(self) -> dict[str, tuple[str, str]]:
        """camera name -> (device, app), for limit checks on update."""
        return {n: (d, a) for n, d, a in self._rows("SELECT name, device, app FROM cameras")}

    def _seal_passwords(self, cameras: list[Camera]) -> list[str | None]:
        box = self.box
        return [
            box.seal(c.password, aad=f"camera:{c.name}") if c.password else None for c in cameras
        ]

    def write_cameras(self, creates: list[Camera], updates: list[Camera]) -> None:
        """Insert `creates` and replace `updates` in one transaction (all or nothing)."""
        with self.transaction():
            self._write_cameras(creates, updates, self._seal_passwords(creates + updates))

    def _write_cameras(
        self, creates: list[Camera], updates: list[Camera], refs: list[str | None]
    ) -> None:
        now = time.time()
        rows = [
            (
                c.name,
                c.device,
                c.rtsp_url,
                c.username,
                ref,
                c.description,
                json.dumps(c.tags, sort_keys=True),
                c.tags.get("app", ""),
                now,
                now,
            )
            for c, ref in zip(creates + updates, refs, strict=True)
        ]
        self.conn.executemany(
            "INSERT INTO cameras(name, device, rtsp_url, username, password_ref, description, "
            "tags, app, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows[: len(creates)],
        )
        self.conn.executemany(
            "UPDATE cameras SET device = ?2, rtsp_url = ?3, username = ?4, password_ref = ?5, "
            "description = ?6, tags = ?7, app = ?8, updated_at = ?10, codec = NULL, "
            "status = 'UNPROBED', status_detail = '' WHERE name = ?1",
            rows[len(creates) :],
        )
        events = [
            (
                now,
                c.name,
                "camera",
                "imported" if i < len(creates) else "updated",
                json.dumps({"device": c.device}),
            )
            for i, c in enumerate(creates + updates)
        ]
        self.conn.executemany(
            "INSERT INTO history(at, subject, kind, event, detail) VALUES (?, ?, ?, ?, ?)", events
        )

    def _camera_record(self, row: tuple[Any, ...]) -> dict[str, Any]:
        (
            name,
            device,
            site,
            url,
            user,
            ref,
            desc,
            codec,
            status,
            detail,
            tags,
            probed,
            created,
            updated,
        ) = row
        return {
            "name": name,
            "device": device,
            "site": site,
            "rtsp_url": url,
            "username": user,
            "password": mask(ref),
            "description": desc,
            "codec": codec,
            "status": status,
            "status_detail": detail,
            "tags": json.loads(tags),
            "probed_at": _iso(probed),
            "created_at": _iso(created),
            "updated_at": _iso(updated),
        }

    def get_camera(self, name: str) -> dict[str, Any] | None:
        rows = self._rows(f"{_CAMERA_SELECT} WHERE c.name = ?", (name,))
        return self._camera_record(rows[0]) if rows else None

    def list_cameras(
        self, *, devices: Iterable[str] = (), sites: Iterable[str] = (), names: Iterable[str] = ()
    ) -> list[dict[str, Any]]:
        devices, sites, names = set(devices), set(sites), set(names)
        rows = self._rows(f"{_CAMERA_SELECT} ORDER BY d.site, c.device, c.name")
        return [
            self._camera_record(r)
            for r in rows
            if (not devices or r[1] in devices)
            and (not sites or r[2] in sites)
            and (not names or r[0] in names)
        ]

    def _password_ref(self, name: str) -> str | None:
        rows = self._rows("SELECT password_ref FROM cameras WHERE name = ?", (name,))
        row = rows[0] if rows else None
        if row is None:
            raise NotFound(
                f"camera '{name}' is not registered", fix="list cameras with `fleet cameras list`"
            )
        return row[0]  # type: ignore[no-any-return]

    def camera_password(self, name: str) -> str:
        """The camera's password in clear ('' when it has none). Never print it."""
        ref = self._password_ref(name)
        return self.box.open(ref, aad=f"camera:{name}") if ref else ""

    def count_secrets(self) -> int:
        """How many sealed secrets the registry holds (what a key rotation re-seals)."""
        return int(self._rows("SELECT COUNT(*) FROM cameras WHERE password_ref IS NOT NULL")[0][0])

    def rotate_secret_key(self) -> Rotation:
        """A new key file, every camera password re-sealed with it (`fleet secrets rotate`)."""

        def reseal(current: SecretBox, new: SecretBox) -> int:
            with self.transaction() as conn:
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

        rotation = rotate_key(self.state_dir, reseal)
        self._box = None  # the next use reads the new key file
        return rotation

    def set_camera_probe(self, name: str, status: str, codec: str | None, detail: str) -> None:
        if status not in CAMERA_STATUSES:
            raise ConfigError(f"unknown camera status '{status}'")
        with self.transaction():
            self.conn.execute(
                "UPDATE cameras SET status = ?, codec = COALESCE(?, codec), status_detail = ?, "
                "probed_at = ? WHERE name = ?",
                (status, codec, detail, time.time(), name),
            )

    def remove_cameras(self, names: Iterable[str]) -> list[str]:
        """Delete the named cameras; an unknown name removes nothing at all."""
        wanted = list(dict.fromkeys(names))
        with self.transaction():
            missing = [n for n in wanted if self.get_camera(n) is None]
            if missing:
                raise NotFound(
                    f"camera(s) not registered: {', '.join(missing[:5])}",
                    fix="list cameras with `fleet cameras list`",
                )
            self._delete_cameras(wanted)
        return wanted

    def _delete_cameras(self, names: list[str]) -> None:
        self.conn.executemany("DELETE FROM cameras WHERE name = ?", [(n,) for n in names])
        for name in names:
            self._log(name, "camera", "removed")


def _tag_matches(tags: Mapping[str, str], wanted: str) -> bool:
    key, sep, value = wanted.partition("=")
    return key in tags and (not sep or tags[key] == value)


def certificate_fingerprint(cert_pem: str) -> str:
    """``sha256:<hex>`` of the certificate's DER (the provisioning format's fingerprint)."""
    from cryptography import x509
    from fleet_runtime.provisioning import cert_fingerprint

    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode("ascii"))
    except ValueError as exc:
        raise ConfigError("not a PEM certificate", fix="pass the device's .crt file") from exc
    return cert_fingerprint(cert)
