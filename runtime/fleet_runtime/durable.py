"""Durable files, file locks and retry waits: the one copy both halves use.

* `atomic_file` / `atomic_write`: a file that holds either its old or its new
  content after a crash, never a mix. The data goes to a uniquely named temp
  file in the same directory (so the rename cannot cross a filesystem), whose
  mode is set before a byte is written; the file is fsync'd, renamed over the
  name, and the directory is fsync'd so the rename itself survives power loss.
* `file_lock`: an ``flock`` on a lock file, shared or exclusive, waiting
  forever or up to a timeout (then `LockTimeout`, which names the file). The
  kernel drops the lock when its holder dies, even on SIGKILL.
* `Backoff`: growing waits (with jitter, up to a cap) between retries, spent
  on a ``threading.Event`` so a stop request ends the wait at once.

The controller (``fleet``) imports this module; it imports nothing of ``fleet``.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    import random

# How often a lock with a timeout is tried again: short next to any timeout a caller gives,
# long enough not to spin (flock has no timed wait of its own).
LOCK_POLL_S = 0.05


def fsync_dir(path: Path) -> None:
    """Make the directory's entries (a rename, a new or removed name) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(
    path: Path,
    mode: int = 0o644,
    *,
    chmod: bool = True,
    exclusive: bool = False,
    sync: bool = True,
    sync_dir: bool = True,
    prefix: str | None = None,
    suffix: str = ".tmp",
) -> Iterator[BinaryIO]:
    """Write `path` through a binary file handle; the name appears only when the block ends.

    The handle's ``name`` is the temp file's path (to read back before committing). An
    exception in the block removes the temp file and leaves `path` as it was. `exclusive`
    publishes with a hard link, so FileExistsError says another writer got there first.
    `sync=False` skips the fsyncs (public files that can be made again); `sync_dir=False`
    leaves the directory fsync to a caller that writes a batch of files. `chmod=False`
    creates the file with `mode` less the umask, as ``open()`` does, and never changes it
    (a FAT drive refuses chmod).

    >>> with atomic_file(Path("state.json"), 0o600) as fh:  # doctest: +SKIP
    ...     fh.write(b"{}")
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path.parent, prefix or f".{path.name}.", suffix,
                           0o600 if chmod else mode)
    try:
        if chmod:
            os.fchmod(fd, mode)  # before any data: nothing sits in a file wider than asked
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    try:
        with open(tmp, "wb", opener=lambda *_: fd) as fh:
            yield fh
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        _publish(tmp, path, exclusive)
    finally:
        Path(tmp).unlink(missing_ok=True)  # gone already after a rename
    if sync and sync_dir:
        fsync_dir(path.parent)


def _create_temp(folder: Path, prefix: str, suffix: str, mode: int) -> tuple[int, str]:
    """A new file under a random name (O_EXCL: never one that exists, never through a link)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):
        tmp = str(folder / f"{prefix}{os.urandom(6).hex()}{suffix}")  # what secrets.token_hex does
        try:
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:
            continue  # 48 random bits taken: try another name
    raise FileExistsError(f"no free temporary name in {folder}")


def _publish(tmp: str, path: Path, exclusive: bool) -> None:
    if exclusive:
        os.link(tmp, path)  # fails when the name exists: the first writer wins
    else:
        os.replace(tmp, path)


def atomic_write(path: Path, data: bytes, mode: int = 0o644, **options: Any) -> None:
    """`data` into `path`, whole or not at all (options as for `atomic_file`)."""
    with atomic_file(path, mode, **options) as fh:
        fh.write(data)


def atomic_write_text(path: Path, text: str, mode: int = 0o644, **options: Any) -> None:
    atomic_write(path, text.encode("utf-8"), mode, **options)


def atomic_write_json(path: Path, obj: Any, mode: int = 0o644) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", mode)


def replace(src: Path, dst: Path) -> None:
    """Rename `src` over `dst` (a file or a directory) and make the rename durable."""
    os.replace(src, dst)
    fsync_dir(dst.parent)


# ------------------------------------------------------------------------------- locks


class LockTimeout(TimeoutError):
    """A lock another process still held when the wait ran out."""

    def __init__(self, path: Path, timeout: float):
        super().__init__(f"{path} is locked by another process (waited {timeout:g}s)")
        self.path = path


def acquire_lock(
    path: Path, *, shared: bool = False, timeout: float | None = None, mode: int = 0o666
) -> int:
    """Lock `path` (created with `mode`, less the umask) and return the open descriptor that
    holds the lock; closing it releases. `timeout` None waits as long as it takes, 0 tries
    once; LockTimeout when it runs out."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        _flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX, path, timeout)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _flock(fd: int, kind: int, path: Path, timeout: float | None) -> None:
    if timeout is None:
        fcntl.flock(fd, kind)
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockTimeout(path, timeout) from None
            time.sleep(LOCK_POLL_S)  # flock cannot wait with a timeout: try again shortly


@contextmanager
def file_lock(
    path: Path, *, shared: bool = False, timeout: float | None = None, mode: int = 0o666
) -> Iterator[int]:
    """Hold a lock on `path` for the block (see `acquire_lock`).

    >>> with file_lock(Path("lab.lock"), timeout=10):  # doctest: +SKIP
    ...     update_the_shared_file()
    """
    fd = acquire_lock(path, shared=shared, timeout=timeout, mode=mode)
    try:
        yield fd
    finally:
        os.close(fd)


def is_locked(path: Path) -> bool:
    """Does a live process hold an exclusive lock on `path` (False when there is no file)?"""
    if not path.exists():
        return False
    try:
        os.close(acquire_lock(path, shared=True, timeout=0))
    except LockTimeout:
        return True
    except FileNotFoundError:
        return False
    return False


# ------------------------------------------------------------------------------ backoff


def backoff_delay(attempt: int, first: float, cap: float, factor: float = 2.0) -> float:
    """The wait before retry number `attempt` (1-based): first, first*factor, ... up to cap."""
    return float(min(first * factor ** max(attempt - 1, 0), cap))


class Backoff:
    """Waits between retries that grow to a cap and end early when `stop` is set.

    `jitter` adds up to that fraction of each wait at random, so devices that lost the
    same server do not all come back in the same second.

    >>> backoff = Backoff(stopping, first=1.0, cap=30.0)  # doctest: +SKIP
    >>> while not connected():
    ...     if backoff.wait():
    ...         break  # asked to stop
    """

    def __init__(
        self,
        stop: threading.Event,
        *,
        first: float,
        cap: float,
        factor: float = 2.0,
        jitter: float = 0.1,
        rng: random.Random | None = None,
    ):
        self.stop, self.first, self.cap, self.factor = stop, first, cap, factor
        if rng is None:
            import random  # here: the modules that only write files need not import it

            rng = random.Random()  # noqa: S311 - not for secrets
        self.jitter, self.rng = jitter, rng
        self.attempt = 0

    def reset(self) -> None:
        """After a success: the next failure waits `first` again."""
        self.attempt = 0

    def next_delay(self) -> float:
        self.attempt += 1
        delay = backoff_delay(self.attempt, self.first, self.cap, self.factor)
        return delay * (1 + self.jitter * self.rng.random())

    def wait(self, note: Callable[[float], None] | None = None) -> bool:
        """Wait the next delay (told to `note` first); True when stop was set meanwhile."""
        delay = self.next_delay()
        if note is not None:
            note(delay)
        return self.stop.wait(delay)
