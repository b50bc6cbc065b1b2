"""A TCP relay per lab device that counts the bytes both ways: what a deploy moves on the wire.

Both sides of a bench connect to a device through its relay (the inventory
points at the relay's port, the device's host key is pinned under that port
too), so both are counted the same way: every byte of the SSH connections,
encrypted, protocol overhead included. The relay runs on a thread of its own
with one asyncio loop; it costs both sides the same small CPU share.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field


@dataclass
class Counters:
    up: int = 0  # controller -> device
    down: int = 0  # device -> controller

    @property
    def total(self) -> int:
        return self.up + self.down


@dataclass
class Relays:
    """Listeners on 127.0.0.1, one per target port; ``ports[target] -> listening port``."""

    targets: list[int]
    ports: dict[int, int] = field(default_factory=dict)
    counters: Counters = field(default_factory=Counters)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def start(self) -> Relays:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the byte-counting relays did not start")
        return self

    def reset(self) -> Counters:
        """The counts so far, and zero from here on."""
        seen, self.counters = self.counters, Counters()
        return seen

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        for target in self.targets:
            server = self._loop.run_until_complete(asyncio.start_server(
                lambda r, w, t=target: self._pair(r, w, t), "127.0.0.1", 0))
            self.ports[target] = server.sockets[0].getsockname()[1]
        ready.set()
        self._loop.run_forever()
        self._loop.set_exception_handler(lambda loop, context: None)  # closing: no noise
        pending = asyncio.all_tasks(self._loop)  # connections still open: end them quietly
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    async def _pair(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    target: int) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pump(reader, up_w, "up"), self._pump(up_r, writer, "down"))

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, way: str) -> None:
        try:
            while data := await src.read(1 << 16):
                if way == "up":
                    self.counters.up += len(data)
                else:
                    self.counters.down += len(data)
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()
