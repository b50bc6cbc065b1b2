"""The manifest a version is staged from: what the device needs of an application bundle.

::

    {"name": "color", "version": "1.2.0",
     "files": [{"path": "graphs/color/graph.json", "sha256": "<64 hex>", "size": 1234}, ...],
     "cameras": {"camera_node": "rtsp://cam-7/stream"},      # optional bindings, no secrets
     "health": {"window_s": 30, "min_fps": 5}}                # optional thresholds

Every file is a blob in the store; the version directory is those files at
those paths. The signed bundle's manifest (controller side) carries more; the
device checks only this much, and the bundle's signature is checked before it
is staged.

>>> parse({"name": "a", "version": "1", "files": []}, "x").name
'a'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from fleet_runtime.apps.blobs import SHA_RE

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RESERVED = ".fleet"  # names under a version directory the device writes itself


class ReleaseError(ValueError):
    """A manifest that is not the shape above; the message names the JSON path."""


@dataclass(frozen=True)
class FileEntry:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Release:
    name: str
    version: str
    files: tuple[FileEntry, ...]
    cameras: dict[str, str] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)

    def shas(self) -> set[str]:
        return {f.sha256 for f in self.files}

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version,
                "files": [f.__dict__ for f in self.files], "cameras": self.cameras,
                "health": self.health}


def parse(doc: Any, where: str) -> Release:
    """A Release from JSON `doc` (read from `where`); ReleaseError naming the bad field."""
    if not isinstance(doc, dict):
        raise ReleaseError(f"{where}: expected a JSON object with name, version, files")
    name, version = (_name(doc.get(k), f"{where}: {k}") for k in ("name", "version"))
    files = doc.get("files")
    if not isinstance(files, list):
        raise ReleaseError(f"{where}: files: expected a list of {{path, sha256, size}}")
    entries = tuple(_entry(f, f"{where}: files[{i}]") for i, f in enumerate(files))
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        if entry.path in seen:
            raise ReleaseError(f"{where}: files[{i}].path: {entry.path} is listed twice")
        seen.add(entry.path)
    return Release(name, version, entries, _cameras(doc.get("cameras"), where),
                   _health(doc.get("health"), where))


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ReleaseError(f"{where}: expected 1-64 letters, digits, '.', '_' or '-' "
                           "(starting with a letter or digit)")
    return value


def _entry(value: Any, where: str) -> FileEntry:
    if not isinstance(value, dict):
        raise ReleaseError(f"{where}: expected {{path, sha256, size}}")
    path, sha, size = value.get("path"), value.get("sha256"), value.get("size")
    if not isinstance(path, str) or not _safe(path):
        raise ReleaseError(f"{where}.path: expected a relative path without '..' "
                           f"(and not under {RESERVED}*)")
    if not isinstance(sha, str) or not SHA_RE.fullmatch(sha):
        raise ReleaseError(f"{where}.sha256: expected 64 lowercase hex digits")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ReleaseError(f"{where}.size: expected a whole number of bytes >= 0")
    return FileEntry(str(PurePosixPath(path)), sha, size)


def _safe(path: str) -> bool:
    parts = PurePosixPath(path).parts
    return bool(parts) and not path.startswith("/") and ".." not in parts and \
        not parts[0].startswith(RESERVED) and "\0" not in path


def _cameras(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ReleaseError(f"{where}: cameras: expected {{camera node: source URI}}")
    return dict(value)


def _health(value: Any, where: str) -> dict[str, Any]:
    from fleet_runtime.apps.settings import SettingsError, health

    if value is None:
        return {}
    try:
        health(value, f"{where}: health")
    except SettingsError as exc:
        raise ReleaseError(str(exc)) from None
    return dict(value)
