"""The embedded registry: ``.fleet/registry.db`` (SQLite, WAL, foreign keys, 0600).

`SQLiteRegistry` is the facade every caller uses (the `Store` interface). It is
made of three parts over one database (`fleet/registry/sqlite_db.py`):

* ``devices`` (`sqlite_devices.Devices`): sites, statuses, software, tags;
* ``cameras`` (`sqlite_cameras.Cameras`): cameras and their sealed passwords;
* ``changes`` (`sqlite_history.History`): every change, appended, which
  outlives the devices and cameras it describes.

>>> with SQLiteRegistry.open(project) as reg:                        # doctest: +SKIP
...     reg.upsert_device("b-01", site="berlin", hardware="orin", arch="aarch64")["status"]
'AWAITING_PROVISIONING'
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fleet.project import Project
from fleet.registry import Camera, RegisterResult
from fleet.registry.schema import migrate
from fleet.registry.sqlite_cameras import Cameras
from fleet.registry.sqlite_db import NAME_OK as NAME_OK
from fleet.registry.sqlite_db import Database
from fleet.registry.sqlite_db import connect as connect
from fleet.registry.sqlite_db import valid_name as valid_name
from fleet.registry.sqlite_devices import Devices
from fleet.registry.sqlite_devices import certificate_fingerprint as certificate_fingerprint
from fleet.registry.sqlite_history import History
from fleet.secrets import Rotation, SecretBox


class SQLiteRegistry:
    """The default registry backend. Also the local cache the aws backend holds."""

    backend = "sqlite"

    def __init__(self, conn: sqlite3.Connection, state_dir: Path, known_hosts: Path | None = None):
        self.db, self.state_dir, self.known_hosts = Database(conn), state_dir, known_hosts
        self.changes = History(self.db)
        self.cameras = Cameras(self.db, self.changes, state_dir)
        self.devices = Devices(self.db, self.changes, self.cameras, known_hosts)

    @classmethod
    def open(cls, project: Project, filename: str = "registry.db") -> SQLiteRegistry:
        path = project.state_dir / filename
        conn = connect(path)
        migrate(conn, str(path))
        return cls(conn, project.state_dir, project.known_hosts)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> SQLiteRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    @property
    def box(self) -> SecretBox:
        return self.cameras.box

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it commits, or none of it."""
        with self.db.transaction() as conn:
            yield conn

    def _upsert(self, name: str, fields: Mapping[str, Any]) -> str:
        """A device upsert inside the caller's transaction (tests and benches seed with it)."""
        return self.devices.upsert_row(name, fields)

    # ---- devices -------------------------------------------------------------------------

    def get_device(self, name: str) -> dict[str, Any] | None:
        """The device's record, or None."""
        return self.devices.get(name)

    def list_devices(
        self,
        *,
        sites: Iterable[str] = (),
        tags: Iterable[str] = (),
        names: Iterable[str] = (),
        statuses: Iterable[str] = (),
    ) -> list[dict[str, Any]]:
        """Devices filtered by site, tag (``key`` or ``key=value``), name and status."""
        return self.devices.find(sites=sites, tags=tags, names=names, statuses=statuses)

    def upsert_device(self, name: str, **fields: Any) -> dict[str, Any]:
        """Create or update a device; `site` is needed to create one. Idempotent."""
        return self.devices.upsert(name, **fields)

    def set_device_status(self, name: str, status: str) -> None:
        """A provisioning or connection status; ONLINE also stamps ``last_seen``."""
        self.devices.set_status(name, status)

    def set_target_software(self, name: str, version: str | None) -> None:
        """The version a rollout wants the device to run."""
        self.devices.set_field(name, "software_target", version, "software-target")

    def set_current_software(self, name: str, version: str | None) -> None:
        """The version the device reported running."""
        self.devices.set_field(name, "software_current", version, "software-current")

    def tag_device(
        self, name: str, tags: Mapping[str, str], remove: Iterable[str] = ()
    ) -> dict[str, Any]:
        """Add or replace tags (``key=value``) and drop the keys in `remove`."""
        return self.devices.tag(name, tags, remove)

    def set_device_certificate(self, name: str, cert_pem: str) -> dict[str, Any]:
        """Record the device certificate's SHA-256 fingerprint."""
        return self.devices.set_certificate(name, cert_pem)

    def deregister_device(self, name: str, *, remove_cameras: bool = False) -> dict[str, Any]:
        """Delete the device (and, if asked, its cameras); its history stays."""
        return self.devices.deregister(name, remove_cameras=remove_cameras)

    def register_from_inventory(self, nornir_or_hosts: Any) -> RegisterResult:
        """Register every inventory host; idempotent, statuses are never reset."""
        return self.devices.register_from_inventory(nornir_or_hosts)

    def history(self, subject: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first: ``{"at", "subject", "kind", "event", "detail"}``."""
        return self.changes.recent(subject, limit)

    # ---- cameras -------------------------------------------------------------------------

    def camera_names(self) -> set[str]:
        return self.cameras.names()

    def camera_counts(self) -> dict[tuple[str, str], int]:
        """Cameras per (device, app); app is the camera's ``app`` tag, '' when untagged."""
        return self.cameras.counts()

    def camera_devices(self) -> dict[str, tuple[str, str]]:
        """camera name -> (device, app), for limit checks on update."""
        return self.cameras.devices()

    def write_cameras(self, creates: list[Camera], updates: list[Camera]) -> None:
        """Insert `creates` and replace `updates` in one transaction (all or nothing)."""
        self.cameras.write(creates, updates)

    def get_camera(self, name: str) -> dict[str, Any] | None:
        return self.cameras.get(name)

    def list_cameras(
        self, *, devices: Iterable[str] = (), sites: Iterable[str] = (), names: Iterable[str] = ()
    ) -> list[dict[str, Any]]:
        return self.cameras.find(devices=devices, sites=sites, names=names)

    def camera_password(self, name: str) -> str:
        """The camera's password in clear ('' when it has none). Never print it."""
        return self.cameras.password(name)

    def set_camera_probe(self, name: str, status: str, codec: str | None, detail: str) -> None:
        self.cameras.set_probe(name, status, codec, detail)

    def remove_cameras(self, names: Iterable[str]) -> list[str]:
        """Delete the named cameras; an unknown name removes nothing at all."""
        return self.cameras.remove(names)

    def count_secrets(self) -> int:
        """How many sealed secrets the registry holds (what a key rotation re-seals)."""
        return self.cameras.count_secrets()

    def rotate_secret_key(self) -> Rotation:
        """A new key file, every camera password re-sealed with it (`fleet secrets rotate`)."""
        return self.cameras.rotate_secret_key()
