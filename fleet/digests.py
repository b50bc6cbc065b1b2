"""SHA-256 of local files the controller sends, computed once per version of a file.

A rollout sends the same bundle to every device, and each streamed upload is
checked by comparing the device's hash of what it received with ours. Ours is
kept, keyed by the file's identity and version as the kernel reports them
(device, inode, size, modification and change times in ns), and reused while
those are unchanged. A stale entry cannot let a wrong upload through: the
device hashes the bytes it actually received, so any difference from the
remembered hash refuses the upload (fail closed). An entry is stored only when
the file's identity was the same before and after it was hashed.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path

KEEP = 64  # file versions remembered (a rollout sends one or a few)
Key = tuple[int, int, int, int, int]

_known: OrderedDict[Key, str] = OrderedDict()
_lock = threading.Lock()


def key_of(st: os.stat_result) -> Key:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def remembered(path: Path) -> str | None:
    """The SHA-256 of `path` as it is now, if it was hashed before in this version."""
    with _lock:
        return _known.get(key_of(path.stat()))


def forget_all() -> None:
    """Drop every remembered hash (benchmarks measure a first upload with it)."""
    with _lock:
        _known.clear()


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
        if key_of(self.path.stat()) == self.before:
            with _lock:
                _known[self.before] = value
                while len(_known) > KEEP:
                    _known.popitem(last=False)
        return value
