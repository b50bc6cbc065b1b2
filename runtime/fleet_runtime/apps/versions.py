"""Version directories side by side, and the one ``current`` symlink that picks one.

::

    var/lib/fleet/apps/<app>/
        app.json                  the flow (fleet_runtime.apps.flow)
        versions/<version>/       the files, hard links into the blob store
        versions/<version>/.fleet-release.json
        current -> versions/<version>

A version directory appears whole or not at all: it is built under
``versions/.<version>.part`` and renamed. The switch makes a new symlink under
a temporary name and renames it over ``current``, so ``current`` always names
a complete version, the old one or the new one.

>>> AppDirs(Layout(Path("/tmp/dev1")), "color").current  # doctest: +SKIP
PosixPath('/tmp/dev1/var/lib/fleet/apps/color/current')
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from fleet_runtime.apps.blobs import BlobStore
from fleet_runtime.apps.release import Release, parse
from fleet_runtime.durable import atomic_write_json, fsync_dir, replace
from fleet_runtime.layout import Layout, read_json
from fleet_runtime.slots import crash_point

RELEASE_FILE = ".fleet-release.json"


@dataclass(frozen=True)
class AppDirs:
    layout: Layout
    name: str

    @property
    def root(self) -> Path:
        return self.layout.apps / self.name

    @property
    def versions(self) -> Path:
        return self.root / "versions"

    def version(self, version: str) -> Path:
        return self.versions / version

    @property
    def current(self) -> Path:
        return self.root / "current"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    def current_version(self) -> str | None:
        """The version ``current`` names (None before the first activation)."""
        try:
            return Path(os.readlink(self.current)).name
        except FileNotFoundError:
            return None

    def release(self, version: str) -> Release | None:
        doc = read_json(self.version(version) / RELEASE_FILE, default=None)
        return None if doc is None else parse(doc, str(self.version(version) / RELEASE_FILE))

    def staged_versions(self) -> list[str]:
        if not self.versions.is_dir():
            return []
        return sorted(p.name for p in self.versions.iterdir()
                      if not p.name.startswith(".") and (p / RELEASE_FILE).is_file())


def missing_blobs(store: BlobStore, release: Release) -> list[str]:
    return sorted(sha for sha in release.shas() if not store.has(sha))


def materialise(dirs: AppDirs, store: BlobStore, release: Release) -> Path:
    """Build ``versions/<version>`` from the blob store (again after a kill); its path."""
    final = dirs.version(release.version)
    if (final / RELEASE_FILE).is_file() and dirs.release(release.version) == release:
        return final
    part = dirs.versions / f".{release.version}.part"
    shutil.rmtree(part, ignore_errors=True)  # a build a kill left half done
    made = {part}
    for entry in release.files:
        dest = part / entry.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        made.update(p for p in dest.parents if part in p.parents or p == part)
        _link_or_copy(store.path(entry.sha256), dest)
        crash_point("app-stage-file")
    atomic_write_json(part / RELEASE_FILE, release.as_dict())
    for folder in sorted(made, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(folder)  # the links are directory entries: durable before the rename
    _swap_in(part, final)
    return final


def _link_or_copy(blob: Path, dest: Path) -> None:
    try:
        os.link(blob, dest)
    except OSError:  # another filesystem, or links refused: a copy (the blob is the truth)
        shutil.copyfile(blob, dest)
        os.chmod(dest, 0o444)
        with open(dest, "rb") as fh:
            os.fsync(fh.fileno())


def _swap_in(part: Path, final: Path) -> None:
    """Rename the built directory over a stale one of the same version (never `current`'s)."""
    if final.exists():
        trash = final.parent / f".{final.name}.old-{secrets.token_hex(4)}"
        replace(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
    replace(part, final)


def switch(dirs: AppDirs, version: str | None) -> None:
    """Point ``current`` at `version` (None: no version runs) in one rename."""
    if version is None:
        dirs.current.unlink(missing_ok=True)
        fsync_dir(dirs.root)
        return
    tmp = dirs.root / f".current.{secrets.token_hex(4)}"
    os.symlink(Path("versions") / version, tmp)
    crash_point("app-switch")
    replace(tmp, dirs.current)


def prune(dirs: AppDirs, keep: list[str | None]) -> list[str]:
    """Remove version directories not in `keep`, and leftovers of killed builds."""
    removed = []
    for path in sorted(dirs.versions.iterdir()) if dirs.versions.is_dir() else []:
        if path.name not in keep or path.name.startswith("."):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    for tmp in dirs.root.glob(".current.*"):
        tmp.unlink(missing_ok=True)
    return removed


def referenced(layout: Layout) -> set[str]:
    """Every blob a version on this device (or a stage in progress) needs."""
    shas: set[str] = set()
    for name in layout.app_names():
        dirs = AppDirs(layout, name)
        for version in dirs.staged_versions():
            release = dirs.release(version)
            shas |= release.shas() if release else set()
        doc = read_json(dirs.root / "app.json", default=None) or {}
        if isinstance(doc.get("release"), dict):
            shas |= {str(f.get("sha256")) for f in doc["release"].get("files", [])
                     if isinstance(f, dict)}
    return shas


def dump(release: Release) -> str:
    return json.dumps(release.as_dict(), sort_keys=True)
