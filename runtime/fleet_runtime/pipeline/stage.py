"""The inference stage between the cameras and the code: models run on frames as they arrive.

A Panorama application calls its model inside its own loop (get, call,
annotate, put), so a straightforward runtime leaves the processor idle while
the code annotates and the code idle while the model runs. Once the code has
called a model with media objects (``self.call({"x": streams}, "model")``),
the stage runs that model on every frame ahead of the code: ``workers``
frames are in flight at once (on the CPU each run uses cores/workers threads;
cross-camera batches of up to the model's batch size when several cameras
have frames waiting), and the code's ``call`` just picks up the finished
result. Frames reach the code in camera order;
real-time cameras still drop their oldest frame when everything falls behind
(counted), before any work is spent on it.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from fleet_runtime.pipeline.frames import Frame, FrameQueue, QueueClosed
from fleet_runtime.pipeline.inference import ModelSession


class InferenceStage:
    """Moves frames from the cameras' queues to the code's queues, running streamed models."""

    def __init__(
        self,
        inputs: dict[str, FrameQueue[Frame]],
        outputs: dict[str, FrameQueue[Frame]],
        wake: threading.Event,
        stop: threading.Event,
        workers: int = 2,
    ) -> None:
        self.inputs, self.outputs = inputs, outputs
        self.wake, self.stop = wake, stop
        self.models: list[ModelSession] = []
        self.failures = 0
        self._lock = threading.Lock()
        self._dispatched = dict.fromkeys(inputs, 0)
        self._delivered = dict.fromkeys(inputs, 0)
        self._done: dict[str, dict[int, Frame]] = {camera: {} for camera in inputs}
        self._delivery = {camera: threading.Lock() for camera in inputs}
        self._closed: set[str] = set()
        self._running = workers
        self._threads = [
            threading.Thread(target=self._work, name=f"inference-{i}", daemon=True)
            for i in range(workers)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def stream(self, session: ModelSession) -> None:
        """Run ``session`` on every frame from now on."""
        with self._lock:
            if session not in self.models:
                self.models = [*self.models, session]

    def _work(self) -> None:
        try:
            while not self.stop.is_set():
                self.wake.clear()
                taken = self._take()
                if taken is None:
                    return
                if not taken:
                    self.wake.wait(0.5)
                    continue
                self._infer([frame for _, _, frame in taken])
                for camera, seq, frame in taken:
                    self._deliver(camera, seq, frame)
        finally:
            self._finish()

    def _limit(self) -> int:
        models = self.models
        if not models:
            return len(self.inputs)  # nothing to run: just move frames along
        waiting = sum(
            1 for camera, q in self.inputs.items() if len(q) and camera not in self._closed
        )
        share = math.ceil(max(1, waiting) / len(self._threads))
        return max(1, min(min(m.batch for m in models), share))

    def _take(self) -> list[tuple[str, int, Frame]] | None:
        """Up to a batch of waiting frames (one per camera); None once every camera has ended."""
        with self._lock:
            limit = self._limit()
            taken: list[tuple[str, int, Frame]] = []
            for camera, queue in self.inputs.items():
                if len(taken) >= limit or camera in self._closed:
                    continue
                try:
                    frame = queue.get_nowait()
                except QueueClosed:
                    self._closed.add(camera)
                    continue
                if frame is not None:
                    taken.append((camera, self._dispatched[camera], frame))
                    self._dispatched[camera] += 1
            if not taken and len(self._closed) == len(self.inputs):
                return None
            return taken

    def _infer(self, frames: list[Frame]) -> None:
        for session in self.models:
            try:
                prepared = [session.prepare(frame.image) for frame in frames]
                runner = session.streaming(len(self._threads))
                for frame, result in zip(frames, session.infer(prepared, runner), strict=True):
                    frame.results[session.name] = result
            except Exception:  # noqa: BLE001 - the code's own call() will meet and report the error
                self.failures += 1

    def _deliver(self, camera: str, seq: int, frame: Frame) -> None:
        """Hand frames to the code in the order the camera produced them."""
        # Per-camera lock, never the stage lock: put() may wait for the code to take a
        # frame (offline cameras drop nothing), and the code may be calling stream().
        with self._delivery[camera]:
            done = self._done[camera]
            done[seq] = frame
            while self._delivered[camera] in done:
                self.outputs[camera].put(done.pop(self._delivered[camera]))
                self._delivered[camera] += 1

    def _finish(self) -> None:
        with self._lock:
            self._running -= 1
            last = self._running == 0
        if last:
            for queue in self.outputs.values():
                queue.close()

    def dropped(self, camera: str) -> int:
        return self.outputs[camera].dropped

    def attach(self, frame: Frame, session: ModelSession) -> Any:
        """The stage's result for ``frame`` (None when the stage did not run it)."""
        return frame.results.get(session.name)
