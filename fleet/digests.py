"""SHA-256 of local files the controller sends, computed at most once per version of a file.

A rollout sends the same bundle to every device, and each streamed upload is
checked by comparing the device's hash of what it received with ours. Ours is
kept, keyed by the file's identity and version as the kernel reports them
(device, inode, size, modification and change times in ns), and reused while
those are unchanged. `fleet firmware build` hashes the bundle as it writes it
(`remember`), so even the first upload reads nothing twice.

The hash also stays on the file itself, in the extended attribute
``user.edgefleet.sha256`` as ``size:mtime_ns:sha256``, so the next `fleet`
process finds it too (setting it moves the change time, so that one is keyed by
the inode it is stored on, the size and the modification time). A file system
without user xattrs simply keeps nothing.

A stale entry cannot let a wrong upload through: the device hashes the bytes it
actually received, so any difference from the remembered hash refuses the upload
(fail closed), and `forget` drops the entry so the next try hashes the file
afresh. An entry is stored only when the file's identity was the same before and
after it was hashed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import IO

KEEP = 64  # file versions remembered (a rollout sends one or a few)
XATTR = "user.edgefleet.sha256"
Key = tuple[int, int, int, int, int]

_known: OrderedDict[Key, str] = OrderedDict()
_lock = threading.Lock()


def key_of(st: os.stat_result) -> Key:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def remembered(path: Path) -> str | None:
    """The SHA-256 of `path` as it is now, if it was hashed before in this version."""
    st = path.stat()
    with _lock:
        known = _known.get(key_of(st))
    return known or _stored(path, st)


def remember(path: Path, sha256: str, before: Key | None = None) -> None:
    """Keep `sha256` as the hash of `path` as it is now; with `before` (its key when the
    hashing began) only if the file did not change meanwhile."""
    st = path.stat()
    if before is not None and key_of(st) != before:
        return
    with contextlib.suppress(OSError):  # no user xattrs here: this process remembers it
        os.setxattr(path, XATTR, f"{st.st_size}:{st.st_mtime_ns}:{sha256}".encode())
        st = path.stat()  # the xattr moved the change time
    _keep(key_of(st), sha256)


def forget(path: Path) -> None:
    """Drop what is remembered for `path` (its hash did not match what a device received)."""
    with contextlib.suppress(OSError):
        os.removexattr(path, XATTR)
    with _lock:
        for key in [k for k in _known if k[:2] == key_of(path.stat())[:2]]:
            del _known[key]


def forget_all() -> None:
    """Drop every hash this process remembers (the ones stored on files stay)."""
    with _lock:
        _known.clear()


def _stored(path: Path, st: os.stat_result) -> str | None:
    try:
        size, mtime, sha = os.getxattr(path, XATTR).decode().split(":")
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if (size, mtime) != (str(st.st_size), str(st.st_mtime_ns)) or len(sha) != 64:
        return None
    _keep(key_of(st), sha)
    return sha


def _keep(key: Key, sha256: str) -> None:
    with _lock:
        _known[key] = sha256
        while len(_known) > KEEP:
            _known.popitem(last=False)


class Hasher:
    """Hashes `path` on a thread (hashlib lets go of the GIL) while it is being sent;
    `result()` waits for it and remembers it when the file did not change meanwhile."""

    def __init__(self, path: Path) -> None:
        self.path, self.digest = path, hashlib.sha256()
        self.before = key_of(path.stat())
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self.path.open("rb") as fh:
            while block := fh.read(1 << 20):
                self.digest.update(block)

    def result(self) -> str:
        self.thread.join()
        value = self.digest.hexdigest()
        remember(self.path, value, before=self.before)
        return value


class HashingWriter:
    """A writable file that hashes what goes through it (a bundle as it is built)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out, self.digest = out, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return int(self.out.write(data))
