"""The registry's devices: sites, statuses, software versions, tags, certificates.

A device's ``status`` is its connection status once provisioned and its
provisioning status before; every change is appended to the history.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fleet.errors import ConfigError
from fleet.registry import (
    AWAITING_PROVISIONING,
    CONNECTION_STATUSES,
    DEVICE_FIELDS,
    NOT_AVAILABLE,
    ONLINE,
    PROVISIONED,
    PROVISIONING_STATUSES,
    SUCCEEDED,
    NotFound,
    RegisterResult,
)
from fleet.registry import hosts as inventory_hosts
from fleet.registry.sqlite_cameras import Cameras
from fleet.registry.sqlite_db import Database, iso, valid_name
from fleet.registry.sqlite_history import History

COLUMNS = (
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


class Devices:
    def __init__(
        self, db: Database, history: History, cameras: Cameras, known_hosts: Path | None = None
    ):
        self.db, self.history, self.cameras, self.known_hosts = db, history, cameras, known_hosts

    # ---- reads -------------------------------------------------------------------------

    def row(self, name: str) -> dict[str, Any] | None:
        """The device's columns as stored (tags still JSON), or None."""
        cols = ", ".join(COLUMNS)
        rows = self.db.rows(f"SELECT {cols} FROM devices WHERE name = ?", (name,))  # noqa: S608
        return dict(zip(COLUMNS, rows[0], strict=True)) if rows else None

    def require(self, name: str) -> dict[str, Any]:
        row = self.row(name)
        if row is None:
            raise NotFound(
                f"device '{name}' is not registered",
                fix="register it with `fleet devices register`",
            )
        return row

    def get(self, name: str) -> dict[str, Any] | None:
        """The device's record, or None."""
        row = self.row(name)
        return self._record(row) if row else None

    def _record(self, row: dict[str, Any], cameras: int | None = None) -> dict[str, Any]:
        rec = dict(row)
        rec["tags"] = json.loads(row["tags"])
        rec["status"] = (
            row["connection"] if row["provisioning"] == PROVISIONED else row["provisioning"]
        )
        target, current = row["software_target"], row["software_current"]
        rec["update_needed"] = bool(target and target != current)
        for key in ("last_seen", "created_at", "updated_at"):
            rec[key] = iso(row[key])
        if cameras is None:
            sql = "SELECT COUNT(*) FROM cameras WHERE device = ?"
            cameras = self.db.rows(sql, (row["name"],))[0][0]
        rec["cameras"] = cameras
        return rec

    def find(
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
        cols = ", ".join(COLUMNS)
        out = []
        counts = dict(self.db.rows("SELECT device, COUNT(*) FROM cameras GROUP BY device"))
        for row in self.db.rows(f"SELECT {cols} FROM devices ORDER BY site, name"):  # noqa: S608
            rec = self._record(dict(zip(COLUMNS, row, strict=True)), counts.get(row[0], 0))
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

    # ---- writes ------------------------------------------------------------------------

    def upsert(self, name: str, **fields: Any) -> dict[str, Any]:
        """Create or update a device; `site` is needed to create one. Idempotent."""
        with self.db.transaction():
            self.upsert_row(name, fields)
        return self.get(name) or {}

    def upsert_row(self, name: str, fields: Mapping[str, Any]) -> str:
        """`upsert` inside the caller's transaction: 'created', 'updated' or 'unchanged'."""
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
        existing = self.row(name)
        if existing is None:
            return self._insert(name, values)
        changed = {k: v for k, v in values.items() if existing.get(k) != v}
        if not changed:
            return "unchanged"
        if "site" in changed:
            self._ensure_site(str(changed["site"]))
        sets = ", ".join(f"{k} = ?" for k in changed)
        self.db.conn.execute(
            f"UPDATE devices SET {sets}, updated_at = ? WHERE name = ?",  # noqa: S608
            (*changed.values(), time.time(), name),
        )
        self.history.log(name, "device", "updated", fields=sorted(changed))
        return "updated"

    def _insert(self, name: str, values: dict[str, Any]) -> str:
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
        self.db.conn.execute(f"INSERT INTO devices({cols}) VALUES ({marks})", tuple(row.values()))  # noqa: S608
        self.history.log(name, "device", "registered", site=values["site"])
        return "created"

    def _ensure_site(self, site: str) -> None:
        if not valid_name(site):
            raise ConfigError(
                f"invalid site name '{site[:60]}'", fix="use 1-255 characters from A-Z a-z 0-9 _ -"
            )
        self.db.conn.execute(
            "INSERT OR IGNORE INTO sites(name, created_at) VALUES (?, ?)", (site, time.time())
        )

    def set_status(self, name: str, status: str) -> None:
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
        with self.db.transaction():
            row = self.require(name)
            now = time.time()
            seen = now if status == ONLINE else row["last_seen"]
            self.db.conn.execute(
                f"UPDATE devices SET {column} = ?, last_seen = ?, updated_at = ? WHERE name = ?",  # noqa: S608
                (status, seen, now, name),
            )
            if row[column] != status:
                self.history.log(name, "device", "status", **{column: status, "was": row[column]})

    def set_field(self, name: str, column: str, value: Any, event: str) -> None:
        with self.db.transaction():
            row = self.require(name)
            if row[column] == value:
                return
            self.db.conn.execute(
                f"UPDATE devices SET {column} = ?, updated_at = ? WHERE name = ?",  # noqa: S608
                (value, time.time(), name),
            )
            self.history.log(name, "device", event, value=value, was=row[column])

    def tag(self, name: str, tags: Mapping[str, str], remove: Iterable[str] = ()) -> dict[str, Any]:
        """Add or replace tags (``key=value``) and drop the keys in `remove`."""
        with self.db.transaction():
            row = self.require(name)
            merged = {**json.loads(row["tags"]), **tags}
            for key in remove:
                merged.pop(key, None)
            self.upsert_row(name, {"tags": merged})
        return self.get(name) or {}

    def set_certificate(self, name: str, cert_pem: str) -> dict[str, Any]:
        """Record the device certificate's SHA-256 fingerprint."""
        fingerprint = certificate_fingerprint(cert_pem)
        with self.db.transaction():
            self.require(name)
            self.upsert_row(name, {"cert_fingerprint": fingerprint})
        return {"fingerprint": fingerprint}

    def deregister(self, name: str, *, remove_cameras: bool = False) -> dict[str, Any]:
        """Delete the device (and, if asked, its cameras); its history stays."""
        with self.db.transaction():
            row = self.require(name)
            cams = self.cameras.on_device(name)
            if cams and not remove_cameras:
                raise ConfigError(
                    f"device '{name}' still has {len(cams)} camera(s)",
                    fix="remove them first or pass --remove-cameras",
                )
            self.cameras.delete(cams)
            self.db.conn.execute("DELETE FROM devices WHERE name = ?", (name,))
            self.history.log(
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
        with self.db.transaction():
            for name, fields in entries:
                row = self.row(name)
                if row is not None:
                    fields["tags"] = {**json.loads(row["tags"]), **fields["tags"]}
                outcome = self.upsert_row(name, fields)
                getattr(result, outcome).append(name)
        return result


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
