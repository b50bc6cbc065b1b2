"""The device's blob store: files named by their SHA-256, verified on arrival.

A blob lives at ``var/lib/fleet/blobs/sha256/ab/cdef...`` (read-only, 0444), so
versions can hard-link it and a new version that changes only code reuses the
model already here. Arriving data goes to ``.partial/<sha>`` and is hashed while
it is written; only a blob whose size and hash match is renamed into place
(atomically, directory fsync'd), so the store never holds a wrong file. A
partial file survives an interrupted transfer: ``have`` reports its size and
the sender continues from there (``offset``).

Before a byte is accepted the store checks the disk: the blob's missing bytes
plus the configured reserve must fit in the free space (the lab's ``disk-full``
fault counts as no free space).

>>> store = BlobStore(Layout(Path("/tmp/dev1")))  # doctest: +SKIP
>>> store.have(["ab" * 32])["missing"]  # doctest: +SKIP
['abab...']
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from fleet_runtime import labhooks
from fleet_runtime.durable import file_lock, replace
from fleet_runtime.layout import Layout
from fleet_runtime.slots import crash_point

SHA_RE = re.compile(r"[0-9a-f]{64}")
CHUNK = 1 << 20


class BlobError(Exception):
    """A refused or failed blob operation (``code`` is stable, ``message`` says how to fix)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def check_sha(text: str) -> str:
    """`text` as a blob name (64 lowercase hex digits), else ValueError."""
    if not SHA_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not a SHA-256 (64 lowercase hex digits)")
    return text


class BlobStore:
    def __init__(self, layout: Layout, reserve_bytes: int = 0) -> None:
        self.layout, self.reserve = layout, reserve_bytes
        self.root = layout.state / "blobs" / "sha256"
        self.partial_dir = self.root / ".partial"

    def path(self, sha: str) -> Path:
        return self.root / sha[:2] / sha[2:]

    def has(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def _lock(self, shared: bool) -> Any:
        self.root.mkdir(parents=True, exist_ok=True)
        return file_lock(self.root / ".lock", shared=shared)

    def free_bytes(self) -> int:
        if labhooks.disk_full(self.layout):
            return 0
        self.root.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(self.root).free

    def have(self, shas: Iterable[str]) -> dict[str, Any]:
        """Which of `shas` are here, which are missing, and how much of each has arrived."""
        have, missing, partial = [], [], {}
        for sha in dict.fromkeys(shas):
            if self.has(sha):
                have.append(sha)
                continue
            missing.append(sha)
            part = self.partial_dir / sha
            if part.is_file():
                partial[sha] = part.stat().st_size
        return {"have": have, "missing": missing, "partial": partial,
                "free_bytes": self.free_bytes(), "reserve_bytes": self.reserve}

    def check_budget(self, need: int, what: str) -> None:
        """BlobError ``disk-budget`` unless `need` more bytes leave the reserve free."""
        free = self.free_bytes()
        if need + self.reserve > free:
            raise BlobError("disk-budget", f"{what} needs {need} bytes but {self.root} has "
                            f"{free} free and keeps {self.reserve} in reserve (reserve_bytes in "
                            f"{self.layout.etc / 'apps.json'}); free space with `fleet-agent "
                            "blobs gc` or `fleet-agent app remove`, then send it again")

    def receive(self, stream: BinaryIO, sha: str, size: int, offset: int = 0) -> dict[str, Any]:
        """Read the blob's bytes from `offset` on from `stream`; keep it only if it matches."""
        with self._lock(shared=True):
            if self.has(sha):
                return {"sha256": sha, "size": size, "stored": False, "already": True}
            self.partial_dir.mkdir(parents=True, exist_ok=True)
            with file_lock(self.partial_dir / f"{sha}.lock", timeout=30):
                return self._receive(stream, sha, size, offset)

    def _receive(self, stream: BinaryIO, sha: str, size: int, offset: int) -> dict[str, Any]:
        part = self.partial_dir / sha
        have = part.stat().st_size if part.exists() else 0
        if offset != have:
            raise BlobError("offset", f"blob {sha[:12]}: {have} bytes have arrived, not "
                            f"{offset}; send again from offset {have}")
        if size < have:
            part.unlink()
            raise BlobError("size", f"blob {sha[:12]}: the partial file is larger than {size} "
                            "bytes; it was removed, send the blob again from offset 0")
        self.check_budget(size - have, f"blob {sha[:12]} ({size} bytes)")
        digest = _hash_prefix(part, have)
        written = _append(stream, part, digest, size - have)
        if have + written < size:
            raise BlobError("short", f"blob {sha[:12]}: the stream ended after {have + written} "
                            f"of {size} bytes; send the rest from offset {have + written}")
        if digest.hexdigest() != sha:
            part.unlink()
            raise BlobError("checksum", f"blob {sha[:12]}: the data's SHA-256 is "
                            f"{digest.hexdigest()[:12]}..., not the name it was sent under; "
                            "it was discarded, send the right file")
        self._publish(part, sha)
        return {"sha256": sha, "size": size, "stored": True, "already": False}

    def _publish(self, part: Path, sha: str) -> None:
        final = self.path(sha)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(part, 0o444)  # versions hard-link blobs: nobody may change one in place
        crash_point("blob-publish")
        replace(part, final)

    def gc(self, referenced: set[str], grace_s: float) -> dict[str, Any]:
        """Remove blobs nothing references that are older than `grace_s` (sent for a stage
        that has not run yet are younger), and partial files as old."""
        removed, freed = [], 0
        cutoff = time.time() - grace_s
        with self._lock(shared=False):
            for path in sorted(self.root.glob("??/*")):
                sha = path.parent.name + path.name
                if sha in referenced or path.stat().st_mtime > cutoff:
                    continue
                freed += path.stat().st_size
                path.unlink()
                removed.append(sha)
            for part in self.partial_dir.glob("*"):
                if part.suffix != ".lock" and part.stat().st_mtime <= cutoff:
                    freed += part.stat().st_size
                    part.unlink()
        return {"removed": removed, "freed_bytes": freed}


def _hash_prefix(part: Path, length: int) -> Any:
    digest = hashlib.sha256()
    if length:
        with part.open("rb") as fh:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                digest.update(chunk)
    return digest


def _append(stream: BinaryIO, part: Path, digest: Any, limit: int) -> int:
    """Copy up to `limit` bytes of `stream` onto `part`, hashing them; fsync'd."""
    written = 0
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "ab") as out:
        while written < limit:
            chunk = stream.read(min(CHUNK, limit - written))
            if not chunk:
                break
            out.write(chunk)
            digest.update(chunk)
            written += len(chunk)
            crash_point("blob-write")
        out.flush()
        os.fsync(out.fileno())
    return written
