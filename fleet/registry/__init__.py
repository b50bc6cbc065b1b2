"""The device and camera registry: one store interface, two backends.

* ``sqlite`` (default): ``.fleet/registry.db``, embedded, nothing to run.
* ``aws``: devices are AWS IoT things (one thing group per site, certificates
  with a per-thing policy), camera credentials live in Secrets Manager under
  ``edgefleet/``; a local SQLite database stays the cache for listings.

Chosen by ``fleet.yaml``::

    registry: {backend: aws, region: eu-central-1, endpoint_url: http://127.0.0.1:5000}

>>> with open_registry(project) as reg:                # doctest: +SKIP
...     reg.upsert_device("berlin-01", site="berlin", hardware="jetson-orin", arch="aarch64")
...     reg.set_device_status("berlin-01", ONLINE)
{'name': 'berlin-01', 'status': 'AWAITING_PROVISIONING', ...}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from fleet.errors import ConfigError
from fleet.project import Project

# Provisioning statuses (Panorama's ProvisioningStatus; SUCCEEDED is accepted for PROVISIONED).
AWAITING_PROVISIONING = "AWAITING_PROVISIONING"
PENDING = "PENDING"
PROVISIONED = "PROVISIONED"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
ERROR = "ERROR"
DELETING = "DELETING"
PROVISIONING_STATUSES = (AWAITING_PROVISIONING, PENDING, PROVISIONED, FAILED, ERROR, DELETING)

# Connection statuses (Panorama's DeviceConnectionStatus, plus REBOOTING from its aggregate).
ONLINE = "ONLINE"
OFFLINE = "OFFLINE"
NOT_AVAILABLE = "NOT_AVAILABLE"
AWAITING_CREDENTIALS = "AWAITING_CREDENTIALS"
REBOOTING = "REBOOTING"
CONNECTION_STATUSES = (ONLINE, OFFLINE, NOT_AVAILABLE, AWAITING_CREDENTIALS, REBOOTING, ERROR)

STATUSES = tuple(dict.fromkeys(PROVISIONING_STATUSES + CONNECTION_STATUSES + (SUCCEEDED,)))

# Camera statuses, set by `fleet cameras probe`.
CAMERA_UNPROBED = "UNPROBED"
CAMERA_STATUSES = (
    CAMERA_UNPROBED,
    "REACHABLE",
    "AUTH_FAILED",
    "NOT_FOUND",
    "TIMEOUT",
    "UNREACHABLE",
    "CODEC_UNSUPPORTED",
    "ERROR",
)

DEVICE_FIELDS = (
    "serial",
    "site",
    "hardware",
    "arch",
    "hostname",
    "port",
    "cert_fingerprint",
    "host_key_fingerprint",
    "tags",
    "software_current",
    "software_target",
    "provisioning",
    "connection",
    "last_seen",
)


class NotFound(ConfigError):
    """A device or camera name the registry does not know."""


@dataclass
class Camera:
    """One camera as it is written to the store (the password in clear, only in memory)."""

    name: str
    device: str
    rtsp_url: str
    username: str = ""
    password: str = ""
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class RegisterResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {"created": self.created, "updated": self.updated, "unchanged": self.unchanged}


class Store(Protocol):
    """What every registry backend offers. Records are plain dicts (JSON-ready).

    Camera records never carry a password: ``password`` is ``***`` or empty;
    `camera_password` is the one way to read it back.
    """

    backend: str

    def upsert_device(self, name: str, **fields: Any) -> dict[str, Any]: ...
    def get_device(self, name: str) -> dict[str, Any] | None: ...
    def list_devices(
        self,
        *,
        sites: Iterable[str] = (),
        tags: Iterable[str] = (),
        names: Iterable[str] = (),
        statuses: Iterable[str] = (),
    ) -> list[dict[str, Any]]: ...
    def set_device_status(self, name: str, status: str) -> None: ...
    def set_target_software(self, name: str, version: str | None) -> None: ...
    def set_current_software(self, name: str, version: str | None) -> None: ...
    def tag_device(
        self, name: str, tags: Mapping[str, str], remove: Iterable[str] = ()
    ) -> dict[str, Any]: ...
    def set_device_certificate(self, name: str, cert_pem: str) -> dict[str, Any]: ...
    def deregister_device(self, name: str, *, remove_cameras: bool = False) -> dict[str, Any]: ...
    def register_from_inventory(self, nornir_or_hosts: Any) -> RegisterResult: ...
    def history(self, subject: str | None = None, limit: int = 100) -> list[dict[str, Any]]: ...

    def camera_names(self) -> set[str]: ...
    def camera_counts(self) -> dict[tuple[str, str], int]: ...
    def camera_devices(self) -> dict[str, tuple[str, str]]: ...
    def write_cameras(self, creates: list[Camera], updates: list[Camera]) -> None: ...
    def get_camera(self, name: str) -> dict[str, Any] | None: ...
    def list_cameras(
        self, *, devices: Iterable[str] = (), sites: Iterable[str] = (), names: Iterable[str] = ()
    ) -> list[dict[str, Any]]: ...
    def camera_password(self, name: str) -> str: ...
    def set_camera_probe(self, name: str, status: str, codec: str | None, detail: str) -> None: ...
    def remove_cameras(self, names: Iterable[str]) -> list[str]: ...
    def close(self) -> None: ...
    def __enter__(self) -> Store: ...
    def __exit__(self, *exc: object) -> None: ...


Registry = Store


def open_registry(project: Project) -> Registry:
    """The registry backend ``fleet.yaml`` asks for (``registry.backend``, default sqlite).

    Use it as a context manager, so the database connection is closed however the block
    ends: ``with open_registry(project) as registry: ...`` (``close()`` does the same).
    """
    config = dict(project.config.get("registry") or {})
    backend = config.get("backend", "sqlite")
    if backend == "sqlite":
        from fleet.registry.sqlite import SQLiteRegistry

        return SQLiteRegistry.open(project)
    if backend == "aws":
        from fleet.registry.aws import AwsRegistry

        return AwsRegistry.open(project, config)
    raise ConfigError(
        f"unknown registry backend '{backend}'",
        where="fleet.yaml: registry.backend",
        fix="use sqlite or aws",
    )
