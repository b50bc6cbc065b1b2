"""Frames and the bounded drop-oldest queue that carries them from a source to the runner.

>>> q = FrameQueue(maxsize=2)
>>> for i in range(3):
...     q.put(i)
>>> q.dropped, q.get(timeout=0)
(1, 1)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass
class Frame:
    """One decoded picture from one camera (BGR, HxWx3 uint8)."""

    camera: str
    index: int
    image: Any
    timestamp: float = field(default_factory=time.time)
    # model name -> decoded result, filled by the inference stage ahead of the code
    results: dict[str, Any] = field(default_factory=dict)


class QueueClosed(Exception):
    """The queue was closed and is empty: its producer has finished."""


class FrameQueue(Generic[T]):
    """Bounded FIFO. When full, ``put`` drops the oldest item (real-time semantics) and
    counts it, or waits for room when ``drop=False`` (offline processing, benchmarks)."""

    def __init__(
        self, maxsize: int = 2, drop: bool = True, bell: threading.Event | None = None
    ) -> None:
        self._items: deque[T] = deque()
        self._bell = bell  # set on every put and on close: lets one reader wait on many queues
        self._maxsize = max(1, maxsize)
        self._drop = drop
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> None:
        with self._cond:
            while not self._drop and len(self._items) >= self._maxsize and not self._closed:
                self._cond.wait()
            if len(self._items) >= self._maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify_all()
        if self._bell is not None:
            self._bell.set()

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest item; None after ``timeout``; QueueClosed once closed and drained."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    raise QueueClosed
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def get_nowait(self) -> T | None:
        """The oldest item or None, without waiting (QueueClosed once closed and drained)."""
        return self.get(timeout=0)

    def wait(self, timeout: float | None) -> bool:
        """Wait until an item is queued or the queue closes; True if one is queued."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            return bool(self._items)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._bell is not None:
            self._bell.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)
