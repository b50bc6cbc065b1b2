"""Where the controller reads the blobs it sends: a verified bundle's files, by SHA-256.

`BlobSource.open_bundle` verifies the bundle as a device would (a project
release key's signature, then every member's size and SHA-256) while writing
each file into ``.fleet/blobs/<sha256>`` once; later deployments of the same
or a newer version find the unchanged files already there. Per-device files
(``override.json``) are added by content. Nothing is sent that was not
verified here first.

>>> source = BlobSource.open_bundle(project, Path("apps/color-1.0.0.app"))  # doctest: +SKIP
>>> source.path(sha).stat().st_size                                            # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fleet_runtime.appbundle import AppManifest, read_app_bundle
from fleet_runtime.bundle import BundleError, FileEntry
from fleet_runtime.durable import atomic_write, replace

from fleet import firmware
from fleet.apps.store import _open, _refused
from fleet.project import Project


class _CacheSink:
    """Each verified payload member into the cache under its SHA-256 (atomically)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fh: IO[bytes] | None = None
        self.tmp: Path | None = None

    def begin(self, entry: FileEntry) -> None:
        if (self.root / entry.sha256).is_file():
            self.fh = None
            return
        self.tmp = self.root / f".{entry.sha256}.{os.getpid()}.part"
        self.fh = self.tmp.open("wb")

    def write(self, data: bytes) -> None:
        if self.fh is not None:
            self.fh.write(data)

    def end(self, entry: FileEntry) -> None:
        if self.fh is None or self.tmp is None:
            return
        self.fh.close()
        self.fh = None
        # the reader checked the hash before calling end: only matching bytes are published
        replace(self.tmp, self.root / entry.sha256)


@dataclass
class BlobSource:
    root: Path
    manifest: AppManifest

    @classmethod
    def open_bundle(cls, project: Project, bundle: Path) -> BlobSource:
        root = project.state_dir / "blobs"
        root.mkdir(mode=0o700, exist_ok=True)
        with _open(bundle) as fh:
            try:
                manifest = read_app_bundle(fh, firmware.keyring(project), _CacheSink(root))
            except BundleError as exc:
                raise _refused(bundle, exc) from None
        return cls(root, manifest)

    def add(self, data: bytes) -> str:
        """A per-device file (its content): stored by SHA-256, which is returned."""
        sha = hashlib.sha256(data).hexdigest()
        path = self.root / sha
        if not path.is_file():
            atomic_write(path, data, mode=0o600)
        return sha

    def path(self, sha: str) -> Path:
        return self.root / sha
