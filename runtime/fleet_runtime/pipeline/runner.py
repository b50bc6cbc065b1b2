"""Run an application graph: models warm, cameras decoding, code supervised, sinks serving.

>>> runner = Runner(load_application(Path("app")), RunOptions(cameras=cams))  # doctest: +SKIP
>>> runner.run(duration=10)                                                  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import runpy
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet_runtime.durable import backoff_delay
from fleet_runtime.manifest import Application, CodeNode
from fleet_runtime.panoramasdk import ApplicationStopped, media
from fleet_runtime.pipeline.frames import Frame, FrameQueue, QueueClosed
from fleet_runtime.pipeline.inference import ModelSession
from fleet_runtime.pipeline.metrics import Counters, health, render
from fleet_runtime.pipeline.sinks import EventLog, HttpServer, OutputHub, VideoWriter
from fleet_runtime.pipeline.sources import Source, SourceError, SourceSpec
from fleet_runtime.pipeline.stage import InferenceStage

log = logging.getLogger("fleet_runtime.runner")


@dataclass
class RunOptions:
    """How to run an application (the command line fills this in)."""

    cameras: dict[str, SourceSpec] = field(
        default_factory=dict
    )  # camera or camera-node name -> source
    providers: list[str] | None = None
    threads: int | None = None
    http_port: int | None = None  # None: no HTTP server; 0: any free port
    http_host: str = "127.0.0.1"
    http_token: str | None = None  # POST /signal needs it; None: signals are refused
    events: Path | None = None
    record: Path | None = None  # output video; "{camera}" in the name for one file per camera
    record_options: dict[str, str] = field(default_factory=dict)
    restart_initial: float = 1.0
    restart_max: float = 30.0
    crash_window: float = 60.0
    crash_loop_after: int = 3
    inference_workers: int = 2  # frames in flight in the inference stage
    stop_on_crash_loop: bool = False  # finite runs (bench, offline files): give up, don't hang


class Supervisor(threading.Thread):
    """Runs one code node; restarts it with exponential backoff when it crashes."""

    def __init__(self, runner: Runner, code: CodeNode, context: CodeContext) -> None:
        super().__init__(name=f"node-{code.name}", daemon=True)
        self.runner, self.code, self.context = runner, code, context
        self.state = "starting"
        self.restarts = 0
        self.errors = 0
        self.last_error: str | None = None
        self.crashes: deque[float] = deque()
        # Panorama's signals: onSignal nodes wait for RESUME; PAUSE holds the node in get()
        self.resumed = threading.Event()
        if code.launch != "onSignal":
            self.resumed.set()

    def signal(self, name: str) -> None:
        """PAUSE or RESUME this node."""
        if name == "RESUME":
            self.resumed.set()
        elif name == "PAUSE":
            self.resumed.clear()
        else:
            raise ValueError(f"unknown signal {name!r}: use PAUSE or RESUME")
        self.runner.bell.set()
        self.runner.events.write("signal", node=self.code.name, signal=name)

    def wait_resumed(self) -> None:
        while not self.resumed.wait(0.2):
            if self.runner.stopping.is_set():
                raise ApplicationStopped("runtime stopping")

    def run(self) -> None:
        try:
            self.wait_resumed()
        except ApplicationStopped:
            self.state = "stopped"
            return
        while not self.runner.stopping.is_set():
            try:
                self.state = "running"
                self._execute()
                self.state = "exited"
                return
            except ApplicationStopped as stop:
                self.state = "stopped"
                log.info("node %s stopped: %s", self.code.name, stop)
                return
            except (Exception, SystemExit) as exc:  # the application's own failure
                delay = self._crashed(exc)
                if self.state == "crash_loop" and self.runner.options.stop_on_crash_loop:
                    return
            if self.runner.stopping.wait(delay):
                return
            self.restarts += 1
            self.runner.events.write("restart", node=self.code.name, restarts=self.restarts)
            log.warning("node %s: restart %d", self.code.name, self.restarts)

    def _crashed(self, exc: BaseException) -> float:
        now = time.monotonic()
        self.errors += 1
        self.runner.counters.error(self.code.name)
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        self.crashes.append(now)
        options = self.runner.options
        while self.crashes and now - self.crashes[0] > options.crash_window:
            self.crashes.popleft()
        self.state = "crash_loop" if len(self.crashes) >= options.crash_loop_after else "restarting"
        delay = backoff_delay(len(self.crashes), options.restart_initial, options.restart_max)
        log.error(
            "node %s crashed (%s); restarting in %.1fs\n%s",
            self.code.name,
            self.last_error,
            delay,
            "".join(traceback.format_exception(exc)).rstrip(),
        )
        self.runner.events.write(
            "crash", node=self.code.name, error=self.last_error, backoff_s=delay
        )
        return float(delay)

    def _execute(self) -> None:
        from fleet_runtime import panoramasdk
        from fleet_runtime.panoramasdk import paths

        panoramasdk.install()
        panoramasdk.bind(self.context)
        paths.install()  # /panorama, /opt/aws/panorama/logs: see panoramasdk/paths.py
        paths.bind(paths.for_node(self.code.code_root, self.runner.app.name))
        root = str(self.code.code_root)
        if root not in sys.path:
            sys.path.insert(0, root)
        runpy.run_path(str(self.code.entry), run_name="__main__")

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        recent = [t for t in self.crashes if now - t <= self.runner.options.crash_window]
        state = self.state
        if state == "running" and len(recent) >= self.runner.options.crash_loop_after:
            state = "crash_loop"  # running again, but it keeps falling over
        elif state in ("starting", "running") and not self.resumed.is_set():
            state = "paused"
        return {
            "state": state,
            "restarts": self.restarts,
            "errors": self.errors,
            "last_error": self.last_error,
        }


class CodeContext:
    """One code node's view of the graph: its cameras, parameters, models and outputs."""

    def __init__(self, runner: Runner, code: CodeNode) -> None:
        self.runner = runner
        self.name = code.name
        self.params = dict(code.params)
        self.media_inputs = list(code.media_inputs)
        self.media_outputs = list(code.media_outputs)
        self._unconnected = [p for p in code.declared_outputs if p not in code.media_outputs]
        self.media_outputs += self._unconnected
        self._cameras = {
            port: runner.cameras_of(nodes) for port, nodes in code.media_inputs.items()
        }
        self._last: dict[str, Any] = {}
        self.supervisor: Supervisor | None = None
        self.frames_out = 0  # media this node put on its outputs (did the app ever work?)
        self.told_to_stop = False  # get() raised ApplicationStopped
        self.parked = threading.Event()  # the app swallowed it and asked again: held in get()

    def get_media(self, port: str, timeout: float | None) -> list[Any]:
        if self.told_to_stop:
            self._park()
        try:
            return self._get_media(port, timeout)
        except ApplicationStopped:
            self.told_to_stop = True
            raise

    def _park(self) -> None:
        """Hold a node that caught ApplicationStopped (a bare ``except:`` in its loop).

        Raising again would spin its loop, logging a traceback per turn, and the
        run would never end. On the appliance a stop killed the container; here
        the thread waits until the process exits (it is a daemon).
        """
        self.runner.stopping.set()  # its streams ended or the runtime is stopping: end the run
        if self.supervisor is not None:
            self.supervisor.state = "stopped"
        log.info("node %s caught ApplicationStopped and asked again: holding it", self.name)
        self.parked.set()
        threading.Event().wait()

    def _get_media(self, port: str, timeout: float | None) -> list[Any]:
        cameras = self._cameras.get(port, [])
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.runner.stopping.is_set():
                raise ApplicationStopped("runtime stopping")
            if self.supervisor is not None:
                self.supervisor.wait_resumed()  # a PAUSE signal holds the node here
            self.runner.bell.clear()
            fresh = self._take(cameras)
            if fresh:
                return [
                    self._media_for(c, fresh.get(c))
                    for c in cameras
                    if c in fresh or c in self._last
                ]
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return [self._media_for(c, None) for c in cameras if c in self._last]
            self.runner.bell.wait(0.5 if left is None else min(left, 0.5))

    def _take(self, cameras: list[str]) -> dict[str, Frame]:
        fresh: dict[str, Frame] = {}
        ended = 0
        for camera in cameras:
            try:
                frame = self.runner.queues[camera].get_nowait()
            except QueueClosed:
                ended += 1
                continue
            if frame is not None:
                fresh[camera] = frame
        if not fresh and cameras and ended == len(cameras):
            raise ApplicationStopped("all camera streams ended")
        return fresh

    def _media_for(self, camera: str, frame: Frame | None) -> Any:
        if frame is None:
            cached = media(self._last[camera].frame, is_cached=True)
            return cached
        item = media(frame)
        self._last[camera] = item
        return item

    def put_media(self, port: str, streams: list[Any]) -> None:
        for item in streams:
            if not isinstance(item, media):
                raise TypeError(
                    f"{self.name}.{port}.put() takes media objects from get(),"
                    f" got {type(item).__name__}"
                )
            if port in self._unconnected:
                continue  # no node consumes this port in graph.json
            self.runner.output(item)
            self.frames_out += 1

    def call(self, inputs: dict[str, Any], model_node: str, timeout: float | None = None) -> Any:
        session = self.runner.models.get(model_node)
        if session is None:
            raise KeyError(
                f"no model node {model_node!r} in graph.json"
                f" (models: {', '.join(self.runner.models) or 'none'})"
            )
        values = list(inputs.values())
        if len(values) == 1 and _is_media(values[0]):
            return self.runner.infer_media(
                session, values[0] if isinstance(values[0], list) else [values[0]]
            )
        return tuple(session.run(inputs))


def _is_media(value: Any) -> bool:
    return isinstance(value, media) or (
        isinstance(value, list | tuple) and bool(value) and all(isinstance(v, media) for v in value)
    )


class Runner:
    """Starts and stops everything for one application; ``snapshot()`` feeds /metrics, /health."""

    def __init__(self, app: Application, options: RunOptions) -> None:
        self.app, self.options = app, options
        self.stopping = threading.Event()
        self.bell = threading.Event()  # rung when a frame is ready for the code
        self.camera_bell = threading.Event()  # rung when a camera decoded a frame
        self.counters = Counters()
        self.hub = OutputHub()
        self.events = EventLog(options.events)
        self.models: dict[str, ModelSession] = {}
        self.sources: dict[str, Source] = {}
        self.decoded: dict[str, FrameQueue[Frame]] = {}  # camera -> inference stage
        self.queues: dict[str, FrameQueue[Frame]] = {}  # inference stage -> code
        self.stage: InferenceStage | None = None
        self.supervisors: list[Supervisor] = []
        self.http: HttpServer | None = None
        self.writers: dict[str, VideoWriter] = {}
        self.ready = False
        self._bindings = {node: cam.cameras for node, cam in app.camera_nodes.items()}

    def cameras_of(self, nodes: list[str]) -> list[str]:
        return [camera for node in nodes for camera in self._bindings.get(node, [node])]

    def _spec_for(self, node: str, camera: str) -> SourceSpec:
        spec = self.options.cameras.get(camera) or self.options.cameras.get(node)
        if spec is None:
            raise SourceError(
                f"camera {camera} (node {node}) is not bound:"
                f" pass --camera {camera}=URI or add it to cameras.json"
            )
        return dataclasses.replace(spec, name=camera)  # one spec may serve several cameras

    def start(self) -> None:
        """Models loaded and warmed up, HTTP up, cameras and code nodes started; then ready."""
        specs = {
            cam: self._spec_for(node, cam) for node, cams in self._bindings.items() for cam in cams
        }
        if self.options.http_port is not None:
            self.http = HttpServer(
                self.hub,
                self.metrics_text,
                self.health_doc,
                self.options.http_host,
                self.options.http_port,
                signal=self.signal,
                token=self.options.http_token,
            )
            self.http.start()
        for name, node in self.app.model_nodes.items():
            self.models[name] = self._load_model(name, node)
        for camera, spec in specs.items():
            self.decoded[camera] = FrameQueue(
                spec.queue_size, drop=spec.drop, bell=self.camera_bell
            )
            self.queues[camera] = FrameQueue(spec.queue_size, drop=spec.drop, bell=self.bell)
            self.sources[camera] = Source(spec, self.decoded[camera])
        self.stage = InferenceStage(
            self.decoded,
            self.queues,
            self.camera_bell,
            self.stopping,
            self.options.inference_workers,
        )
        self.stage.start()
        for source in self.sources.values():
            source.start()
        for code in self.app.code_nodes:
            context = CodeContext(self, code)
            supervisor = context.supervisor = Supervisor(self, code, context)
            self.supervisors.append(supervisor)
            supervisor.start()
        self.ready = True
        self.events.write(
            "started", app=self.app.name, cameras=list(specs), models=list(self.models)
        )

    def _load_model(self, name: str, node: Any) -> ModelSession:
        session = ModelSession(
            name, node.model_path, node.descriptor, self.options.providers, self.options.threads
        )
        warm = session.warm_up()
        # the inference stage's own session (CPU: one per stage, fewer threads per run) is
        # created and warmed here too, not on the first frame while the cameras are running
        try:
            session.streaming(self.options.inference_workers)
        except Exception as exc:  # noqa: BLE001 - the stage meets it again and counts it
            log.debug("model %s: stage session not prepared: %s", name, exc)
        self.events.write(
            "model", model=name, providers=session.providers.as_dict(), warmup_ms=round(warm, 1)
        )
        return session

    def infer_media(self, session: ModelSession, items: list[Any]) -> list[Any]:
        """Results for media: the stage's when it ran the model, else computed now (batched)."""
        if self.stage is not None:
            self.stage.stream(session)  # from now on the stage runs it ahead of the code
        results = [item.frame.results.get(session.name) for item in items]
        missing = [i for i, result in enumerate(results) if result is None]
        if missing:
            computed = session.infer([session.prepare(items[i].image) for i in missing])
            for i, result in zip(missing, computed, strict=True):
                results[i] = items[i].frame.results[session.name] = result
        if self.events.path is not None:
            for item, result in zip(items, results, strict=True):
                if hasattr(result, "as_dicts") and len(result.as_dicts()):
                    self.events.write(
                        "inference",
                        camera=item.stream_id,
                        frame=item.frame_id,
                        model=session.name,
                        results=result.as_dicts(),
                    )
        return results

    def output(self, item: Any) -> None:
        if self.events.path is not None and (item.labels or item.rects):
            self.events.write(
                "output",
                camera=item.stream_id,
                frame=item.frame_id,
                labels=[text for text, _, _ in item.labels],
                rects=len(item.rects),
            )
        image = item.render()
        self.counters.frame_out(item.stream_id)
        if self.http is not None:
            self.hub.publish(item.stream_id, image)
        if self.options.record is not None:
            self._writer(item.stream_id).write(image)

    def _writer(self, camera: str) -> VideoWriter:
        if camera not in self.writers:
            template = str(self.options.record)
            path = Path(template.replace("{camera}", camera))
            fps = self.sources[camera].spec.fps if camera in self.sources else 15.0
            self.writers[camera] = VideoWriter(path, fps, options=self.options.record_options)
            self.writers[camera].start()
        return self.writers[camera]

    def wait(self, duration: float | None = None,
             tick: Callable[[], None] | None = None) -> None:
        """Until ``duration`` passes or every code node has finished; `tick` runs every
        round (the systemd watchdog's ping: it stops when this loop stops turning)."""
        deadline = None if duration is None else time.monotonic() + duration
        while not self.stopping.is_set():  # SIGTERM, or a node ignored the end of its streams
            if tick is not None:
                tick()
            alive = [s for s in self.supervisors if s.is_alive() and not s.context.parked.is_set()]
            if not alive:
                return
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            # join, not a fixed poll: return as soon as the last node ends (a 0.2 s poll
            # added up to 0.2 s to every offline run)
            alive[0].join(0.2 if left is None else min(left, 0.2))

    def stop(self) -> None:
        self.stopping.set()
        self.bell.set()
        self.camera_bell.set()
        for source in self.sources.values():
            source.stop()
            source.queue.close()
        for source in self.sources.values():
            # Decoder threads live in FFmpeg: let them leave before the interpreter goes.
            source.join(timeout=2)
        if self.stage is not None:
            self.stage.join(timeout=10)
        for supervisor in self.supervisors:
            give_up = time.monotonic() + 10
            while supervisor.is_alive() and not supervisor.context.parked.is_set():
                supervisor.join(0.1)  # parked: held in get() for good, do not wait on it
                if time.monotonic() > give_up:
                    break
        for writer in self.writers.values():
            writer.close()
        if self.http is not None:
            self.http.stop()
        self.events.write("stopped", frames_out=dict(self.counters.frames_out))
        self.events.close()

    def run(self, duration: float | None = None) -> dict[str, Any]:
        """start, wait, stop; the final snapshot, plus ``seconds``: from ready (models loaded
        and warm) to the end of the wait, what frames/s figures divide by."""
        self.start()
        start = time.perf_counter()
        try:
            self.wait(duration)
        finally:
            seconds = time.perf_counter() - start
            snap = self.snapshot()
            self.stop()
        return {**snap, "seconds": seconds}

    def snapshot(self) -> dict[str, Any]:
        cameras = {
            name: {
                "connected": s.status.connected,
                "frames_in": s.status.frames,
                "frames_dropped": self.decoded[name].dropped + self.queues[name].dropped,
                "frames_out": self.counters.frames_out.get(name, 0),
                "reconnects": s.status.reconnects,
                "last_error": s.status.last_error,
            }
            for name, s in self.sources.items()
        }
        models = {
            name: {
                "providers": m.providers.as_dict(),
                "runs": m.timing.count,
                "total_ms": round(m.timing.total_ms, 3),
                "p50": round(m.timing.quantile(0.5), 3),
                "p95": round(m.timing.quantile(0.95), 3),
            }
            for name, m in self.models.items()
        }
        nodes = {s.code.name: s.status() for s in self.supervisors}
        return {
            "ready": self.ready and not self.stopping.is_set(),
            "cameras": cameras,
            "models": models,
            "nodes": nodes,
            "fps": self.counters.fps(),
        }

    def signal(self, node: str, name: str) -> None:
        """Send PAUSE or RESUME to a code node (Panorama's node signals)."""
        found = [s for s in self.supervisors if s.code.name == node]
        if not found:
            raise KeyError(f"no code node {node!r}")
        found[0].signal(name)

    def metrics_text(self) -> str:
        return render(self.snapshot())

    def health_doc(self) -> dict[str, Any]:
        return health(self.snapshot())


def load_cameras_file(path: Path) -> dict[str, SourceSpec]:
    """Camera bindings from the device's cameras file (0600: it holds camera passwords).

    ``{"cameras": [{"name", "url", "username", "password"}]}`` (a mapping of name to
    the same fields is accepted too). Passwords stay in the SourceSpec, out of logs.
    A file that is not that shape raises SourceError naming the file and entry.
    """
    from fleet_runtime.pipeline.sources import SourceError, parse_source

    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:  # a decoding error is a ValueError too
        raise SourceError(f"{path}: not a readable JSON file ({exc})") from None
    cameras = doc.get("cameras", []) if isinstance(doc, dict) else None
    if isinstance(cameras, dict):
        cameras = [{"name": n, **f} if isinstance(f, dict) else f for n, f in cameras.items()]
    if not isinstance(cameras, list):
        raise SourceError(f'{path}: expected {{"cameras": [{{"name": ..., "url": ...}}]}}')
    specs = {}
    for index, cam in enumerate(cameras):
        if not _camera_entry_ok(cam):
            raise SourceError(f"{path}: cameras[{index}]: needs text 'name' and 'url', and "
                              "text or null 'username' and 'password'")
        spec = parse_source(cam["name"], cam["url"])
        spec.username, spec.password = cam.get("username"), cam.get("password")
        specs[cam["name"]] = spec
    if any(s.password for s in specs.values()) and path.stat().st_mode & 0o077:
        log.warning("%s holds camera passwords and is readable by others: chmod 600 %s", path, path)
    return specs


def _camera_entry_ok(cam: Any) -> bool:
    return (isinstance(cam, dict) and isinstance(cam.get("name"), str)
            and isinstance(cam.get("url"), str)
            and all(isinstance(cam.get(k), (str, type(None))) for k in ("username", "password")))
