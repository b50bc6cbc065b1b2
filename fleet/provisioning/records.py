"""Where built archives are recorded: the registry's provisioning status of each device.

A built archive makes its device ``AWAITING_PROVISIONING`` (or keeps it
``PROVISIONED`` while a new identity waits on the drive); its first boot makes it
``PROVISIONED``; a factory reset makes it ``AWAITING_PROVISIONING`` again.

>>> mark_provisioned(project, "berlin-01")                   # doctest: +SKIP
'registry'
"""

from __future__ import annotations

import json
import queue
import threading
from typing import TYPE_CHECKING, Any

from fleet.errors import FleetError
from fleet.project import Project
from fleet.registry import open_registry

if TYPE_CHECKING:
    from fleet.provisioning.archive import BuiltArchive

AWAITING_PROVISIONING, PROVISIONED = "AWAITING_PROVISIONING", "PROVISIONED"


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, sort_keys=True) + "\n").encode()


def provisioned_devices(project: Project, names: list[str]) -> set[str]:
    """Those of `names` the registry knows as PROVISIONED (running with an identity)."""
    with open_registry(project) as store:
        found = store.list_devices(names=names)
    return {str(r["name"]) for r in found if r.get("provisioning") == PROVISIONED}


# ---------------------------------------------------------------- registry


class RegistryRecorder:
    """Records built archives as AWAITING_PROVISIONING from one thread of its own.

    The store is opened, used and closed in that thread (SQLite connections stay
    in their thread). `finish` waits for it and raises the first error it met.
    """

    def __init__(self, project: Project) -> None:
        self.project = project
        self.queue: queue.SimpleQueue[BuiltArchive | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="registry", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self.thread.start()

    def put(self, built: BuiltArchive) -> None:
        self.queue.put(built)

    def finish(self) -> str:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise FleetError(
                f"archives were built, but the registry was not updated: {self.error}",
                fix="fix the registry and build the archives again",
            ) from self.error
        return "registry"

    def _run(self) -> None:
        try:
            store = open_registry(self.project)
        except BaseException as exc:  # noqa: BLE001  (reported by finish)
            self.error, store = exc, None
        try:
            while (built := self.queue.get()) is not None:
                if self.error is None:
                    self._record(store, built)
        finally:
            if store is not None:
                store.close()

    def _record(self, store: Any, built: BuiltArchive) -> None:
        try:
            # one transaction per device: status and certificate ride the upsert; a device
            # getting a new identity runs on its old one until it boots with the archive
            status = PROVISIONED if built.replacing else AWAITING_PROVISIONING
            store.upsert_device(built.spec.name, **_registry_fields(built), provisioning=status)
            if store.backend != "sqlite":  # a cloud backend registers the certificate itself
                store.set_device_certificate(built.spec.name, built.issued.cert_pem.decode())
        except BaseException as exc:  # noqa: BLE001
            self.error = exc


def _registry_fields(b: BuiltArchive) -> dict[str, Any]:
    spec = b.spec
    fields = {
        "site": spec.site,
        "serial": spec.serial,
        "hardware": spec.hardware,
        "arch": spec.arch,
        "hostname": spec.hostname,
        "port": spec.port,
        "host_key_fingerprint": ssh_fingerprint(b.host_key),
        "cert_fingerprint": b.issued.fingerprint.removeprefix("sha256:"),
    }
    return {k: v for k, v in fields.items() if v is not None}


def ssh_fingerprint(public_line: str) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` prints it."""
    import base64
    import hashlib

    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def mark_provisioned(project: Project, name: str) -> str:
    with open_registry(project) as store:
        store.set_device_status(name, PROVISIONED)
        store.set_device_status(name, "ONLINE")
    return "registry"


def mark_reset(project: Project, name: str) -> str | None:
    """A factory reset box has no identity: the registry shows it AWAITING_PROVISIONING
    again, so `fleet provision all` builds it a new archive without --replace-identity."""
    with open_registry(project) as store:
        if store.get_device(name) is None:
            return None
        store.set_device_status(name, AWAITING_PROVISIONING)
    return "registry"
