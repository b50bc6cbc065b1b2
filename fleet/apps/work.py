"""An application deployment as rollout work (kind ``app``): decide, apply, accept, verify.

`decide` reads the device (`info`, `app list`, `blobs have` for the version's
blobs) and calls `fleet.apps.decide.decide_app`; `apply` (`AppWork.deploy`)
makes that same decision first, then walks the status model, each step a
subtask the journal records (``device_step``) and the progress callback sees:

    sending (bytes) -> verifying -> staged -> switching -> health_check
    -> succeeded | rolled_back | failed      (current: nothing to do)

Only missing blobs travel, each streamed into ``fleet-agent blobs put`` from
the bytes the device already holds (an interrupted blob continues from its
``partial`` size). The device holds the health gate and rolls back by itself
(`app activate --no-wait`, then `app commit`; if the device's supervisor
is already running the gate, the controller waits for its verdict).
Deploying one app never touches another.

After a controller crash `verify` reads the device's own flow: done on the
target is finished; rolled back from the target by the device's own gate is
failed (not deployed again by `resume`; `retry --failed` does); anything else
is continued by `apply` from where the device stands (a version already
staged is never staged again).

Per-device configuration comes from a ``configure`` callable: by default
`registry_config` (``fleet.apps.config.configure``: layers, cameras bound from
the registry); `graph_defaults` takes the graph's own values only.

>>> work = AppWork.for_bundle(project, Path("apps/color-1.1.0.app"))   # doctest: +SKIP
>>> engine.start(project, nr, work, policy, selection={})              # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fleet_runtime.appbundle import AppManifest
from nornir.core import Nornir
from nornir.core.exceptions import NornirSubTaskError
from nornir.core.inventory import Host
from nornir.core.task import MultiResult, Result, Task

from fleet.agent import Agent, agent_for
from fleet.apps.decide import Blob, DevicePlan, Target, blobs_of, decide_app, version_files
from fleet.apps.reach import probe_cameras
from fleet.apps.source import BlobSource
from fleet.errors import AgentCallError, FleetError, UsageError
from fleet.project import Project
from fleet.rollout.work import Progress
from fleet.transport import CONNECTION_NAME

KIND = "app"
SETTLED = ("done", "failed", "rolled-back")
SEND_CHANNELS = 4  # small blobs in flight at once per device
GATE_DEFAULTS = {"startup_s": 120.0, "window_s": 30.0}  # the device's defaults (apps/settings)


class DeviceConfig(Protocol):
    """One device's configuration of one application (A2's `fleet.apps.config`)."""

    def refusal(self) -> str | None: ...
    def files(self) -> dict[str, bytes]: ...
    def cameras(self) -> dict[str, list[str]]: ...
    def sealed(self) -> bytes | None: ...
    def summary(self) -> dict[str, Any]: ...


Configure = Callable[[Project, Host, Path, list[str]], DeviceConfig]


class GraphDefaults:
    """The graph's own defaults: no per-device files, cameras or secrets."""

    def refusal(self) -> str | None:
        return None

    def files(self) -> dict[str, bytes]:
        return {}

    def cameras(self) -> dict[str, list[str]]:
        return {}

    def sealed(self) -> bytes | None:
        return None

    def summary(self) -> dict[str, Any]:
        return {}


def graph_defaults(project: Project, host: Host, bundle: Path, sets: list[str]) -> DeviceConfig:
    return GraphDefaults()


def registry_config(project: Project, host: Host, bundle: Path, sets: list[str]) -> DeviceConfig:
    """The device's layered configuration, cameras bound from the registry (fleet.apps.config),
    when the deploy configures anything (``-e`` or the inventory's ``apps`` data); a deploy
    that configures nothing keeps the graph's defaults (interim, see docs/app-fleet.md)."""
    from fleet.apps.config import configure

    if not sets and not host.get("apps"):
        return GraphDefaults()
    return configure(project, host, bundle, sets)


class Cancelled(FleetError):
    """The rollout stopped waiting for this device before its switch."""


class StepFailed(Exception):
    def __init__(self, step: str, reason: str) -> None:
        super().__init__(reason)
        self.step, self.reason = step, reason


@dataclass
class AppWork:
    """Everything a rollout needs to deploy one application bundle to devices."""

    project: Project
    bundle: Path
    source: BlobSource
    sets: list[str] = field(default_factory=list)
    health: dict[str, Any] = field(default_factory=dict)  # the manifest's gate thresholds
    configure: Configure = registry_config
    progress: Progress | None = None
    cancelled: set[str] = field(default_factory=set)
    fell_back: dict[str, str] = field(default_factory=dict)  # device -> why it is not redone
    allow_unreachable: bool = False  # deploy even where a bound camera fails the RTSP probe
    engine: str = "ssh"  # iot-jobs: one shared job document, no per-device files
    uri_cameras: dict[str, dict[str, str]] = field(default_factory=dict)  # device -> node: URI
    kind = KIND
    gate = None  # `accept` reads what the device reported

    @classmethod
    def for_bundle(cls, project: Project, bundle: Path, *, sets: list[str] | None = None,
                   health: dict[str, Any] | None = None, configure: Configure | None = None,
                   progress: Progress | None = None,
                   allow_unreachable: bool = False, engine: str = "ssh") -> AppWork:
        """Verify the bundle (signature, every file) into the blob cache, then the work."""
        path = bundle.resolve()
        return cls(project, path, BlobSource.open_bundle(project, path), list(sets or []),
                   dict(health or {}), configure or registry_config, progress,
                   allow_unreachable=allow_unreachable, engine=engine)

    @classmethod
    def from_header(cls, project: Project, header: dict[str, Any],
                    progress: Progress | None = None) -> AppWork:
        return cls.for_bundle(project, Path(str(header["artifact"])),
                              sets=list(header.get("sets") or []),
                              health=dict(header.get("health") or {}), progress=progress,
                              allow_unreachable=bool(header.get("allow_unreachable")))

    @property
    def manifest(self) -> AppManifest:
        return self.source.manifest

    @property
    def artifact(self) -> Path:
        return self.bundle

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def name(self) -> str:
        return self.manifest.name

    def header(self) -> dict[str, Any]:
        return {"kind": KIND, "artifact": str(self.bundle), "version": self.version,
                "artifact_name": self.name, "app": self.name, "sets": list(self.sets),
                "health": dict(self.health), "allow_unreachable": self.allow_unreachable}

    # the decision ---------------------------------------------------------------
    def target_for(self, host: Host) -> tuple[Target, DeviceConfig]:
        config = self.configure(self.project, host, self.bundle, list(self.sets))
        for data in config.files().values():  # per-device files travel as blobs too
            self.source.add(data)
        params = config.summary().get("parameters") or {}
        set_nodes = tuple(sorted(n for n, p in params.items() if p.get("layer") != "graph"))
        return Target(self.manifest, config.files(), config.cameras(), dict(self.health),
                      config.refusal(), set_nodes), config

    def plan_device(self, task: Task) -> tuple[DevicePlan, Target, DeviceConfig]:
        """The device's facts and the decision: what `plan` shows and `deploy` acts on.
        Bound cameras are probed from the device (one `rtsp-probe` call; none when no
        camera is bound or the device is refused before)."""
        agent = agent_for(task)
        info, apps = agent.info(), agent.app_list()
        target, config = self.target_for(task.host)
        files = version_files(target, info.arch or "unknown")
        blobs = None if isinstance(files, str) else \
            agent.blobs_have([b.sha256 for b in blobs_of(files)])
        cameras = None if isinstance(files, str) or target.refusal else \
            probe_cameras(agent, config)
        plan = decide_app(info, apps, blobs, target, files, cameras, self.allow_unreachable,
                          engine=self.engine, device=task.host.name)
        self.uri_cameras[task.host.name] = plan.release(target).get("cameras") or {}
        return plan, target, config

    def job_release(self) -> dict[str, Any]:
        """The release fields one IoT job document carries to every device: the health
        thresholds and the camera source URIs (planned devices must agree on them)."""
        shared: dict[str, Any] = {"health": dict(self.health)}
        uris = {json.dumps(c, sort_keys=True) for c in self.uri_cameras.values()}
        if len(uris) > 1:
            raise UsageError("per-device-config: the devices' camera URIs differ and iot-jobs "
                             "sends one job document to all; deploy over ssh, or bind the "
                             "same URIs for every selected device")
        if uris:
            shared["cameras"] = json.loads(uris.pop())
        return shared

    def decide(self, task: Task) -> Result:
        """Read-only (`fleet app plan`): change, current, refused or offline, with the bytes
        to send and the free disk after."""
        try:
            plan, _, config = self.plan_device(task)
        except FleetError as exc:
            return Result(task.host, result={"state": "offline", "reason": exc.line(),
                                             "target": self.version})
        return Result(task.host, result={**plan.row(), "config": config.summary()})

    # apply ----------------------------------------------------------------------
    @property
    def apply(self) -> Callable[..., Result]:
        return self.deploy

    def params(self) -> dict[str, Any]:
        return {}

    def deploy(self, task: Task, dry_run: bool | None = None) -> Result:
        """Deploy on one device from where it stands; see the module docstring."""
        run = _Deploy(self, task)
        if task.host.name in self.fell_back:  # seen by `verify` after a controller crash
            return run.finish("rolled_back", self.fell_back[task.host.name])
        try:
            plan, target, config = run.step("check", lambda t: self.plan_device(t))
        except StepFailed as exc:
            return run.finish("failed", f"check: {exc.reason}")
        run.report.update(before=plan.current, platform=plan.platform,
                          send_bytes=plan.send_bytes)
        if plan.state == "refused":
            return run.finish("failed", f"refused: {plan.reason}")
        if plan.state == "current":
            return run.finish("current", plan.reason, changed=False)
        if task.is_dry_run(dry_run):
            return run.finish("planned", "dry run: nothing changed", changed=False)
        try:
            return run.walk(plan, target, config)
        except StepFailed as exc:
            return run.finish("failed", f"{exc.step}: {exc.reason}")

    def _emit(self, device: str, step: str, fields: dict[str, Any]) -> None:
        if device in self.cancelled and fields.get("status") == "start" and \
                step in ("check", "sending", "verifying", "staged", "switching"):
            raise Cancelled(f"{device}: stopped before {step}: past device_timeout")
        if self.progress is not None:
            self.progress(device, step, fields)

    # the engine's other hooks ------------------------------------------------------
    def accept(self, multi: MultiResult) -> str | None:
        """Done only on what the device reported: its committed version is the target."""
        report = multi[0].result if isinstance(multi[0].result, dict) else {}
        if report.get("state") in ("current", "planned") and not multi[0].changed:
            return None
        if report.get("state") != "succeeded" or report.get("after") != self.version:
            return f"the device did not report {self.name} {self.version} committed " \
                   f"(state {report.get('state')}, {report.get('after')})"
        return None

    def verify(self, task: Task) -> Result:
        """After a controller crash, read-only: is the app committed on the target? Anything
        else is continued by `deploy` from the device's own flow."""
        app = agent_for(task).app_list().get(self.name)
        if app is not None and app.state == "rolled-back" and app.target == self.version:
            # The device's gate failed while no controller watched: the dead one would have
            # counted it failed, so resume does too instead of deploying it once more.
            self.fell_back[task.host.name] = (
                f"rolled back by the device while the controller was down: {app.reason}; "
                "`fleet app retry --failed` deploys it again")
        if app is None or app.state != "done" or app.committed != self.version:
            where = "absent" if app is None else f"{app.state} ({app.committed})"
            return Result(task.host, failed=True, result=f"{self.name} is {where}")
        return Result(task.host, result={"state": "succeeded", "after": app.committed})

    def probe(self, nr: Nornir) -> Callable[[Host], bool]:
        from fleet.rollout.update import ssh_probe

        return ssh_probe(nr)

    def cancel(self, host: Host) -> None:
        self.cancelled.add(host.name)


@dataclass
class _Deploy:
    """One device's walk (keeps `deploy` short)."""

    work: AppWork
    task: Task
    report: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.report = {"device": self.task.host.name, "app": self.work.name,
                       "target": self.work.version, "before": None, "after": None,
                       "state": "queued", "reason": "", "sent_bytes": 0, "sent_blobs": 0,
                       "steps": []}

    @property
    def agent(self) -> Agent:
        return agent_for(self.task)

    def emit(self, step: str, **fields: Any) -> None:
        self.work._emit(self.task.host.name, step, fields)

    def step(self, name: str, fn: Callable[[Task], Any]) -> Any:
        """Run `fn` as the subtask `name` (the journal's device_step); its value back."""
        self.emit(name, status="start")
        started = time.monotonic()
        box: list[Any] = []

        def body(task: Task) -> Result:
            box.append(fn(task))
            return Result(task.host)

        try:
            self.task.run(task=body, name=name, severity_level=logging.DEBUG)
        except NornirSubTaskError as exc:
            first = exc.result[0]
            reason = first.exception.line() if isinstance(first.exception, FleetError) \
                else f"{type(first.exception).__name__}: {first.exception}"
            self.report["steps"].append({"step": name, "ok": False, "reason": reason})
            self.emit(name, status="failed")
            raise StepFailed(name, reason) from None
        seconds = round(time.monotonic() - started, 3)
        self.report["steps"].append({"step": name, "ok": True, "seconds": seconds})
        self.emit(name, status="done", seconds=seconds)
        return box[0] if box else None

    def finish(self, state: str, reason: str, changed: bool = True) -> Result:
        failed = state not in ("succeeded", "current", "planned")
        self.report.update(state=state, reason=reason)
        if self.report["after"] is None and not failed:
            self.report["after"] = self.report["before"]
        return Result(self.task.host, changed=changed and not failed, failed=failed,
                      result=self.report)

    def walk(self, plan: DevicePlan, target: Target, config: DeviceConfig) -> Result:
        name, version = target.name, target.version
        if plan.resume_from is None:
            self.step("sending", lambda t: self.send(plan))
            self.step("verifying", lambda t: self.verify_blobs(plan))
            sealed = config.sealed()
            if sealed:  # camera credentials: the device's 0600 cameras.json, via stdin only
                self.step("cameras", lambda t: self.agent.call("cameras", "set", "-",
                                                               stdin=sealed))
            self.step("staged", lambda t: self.stage(plan, target))
        self.step("supervisor", lambda t: self.agent.call("app", "start", name))
        if plan.resume_from not in ("checking", "committing"):
            self.step("switching", lambda t: self.agent.call("app", "activate", name, version,
                                                             "--no-wait"))
        verdict = self.step("health_check", lambda t: self.gate(name, target.health))
        self.report["after"] = verdict.committed
        if verdict.state == "done" and verdict.committed == version:
            return self.finish("succeeded", "")
        if verdict.state == "rolled-back":
            return self.finish("rolled_back", f"rolled back by the device: {verdict.reason}")
        return self.finish("failed", f"{name} ended {verdict.state}: {verdict.reason}")

    def send(self, plan: DevicePlan) -> int:
        """Each missing blob, streamed from the bytes the device already holds. Small ones
        travel SEND_CHANNELS at a time over the one SSH connection (each is a short agent
        command: the round trips overlap); large ones one after the other."""
        from concurrent.futures import ThreadPoolExecutor

        from fleet.agent import SMALL_BLOB

        session = self.task.host.get_connection(CONNECTION_NAME, self.task.nornir.config)
        agent, lock = self.agent, threading.Lock()

        def put(item: tuple[Blob, int]) -> None:
            blob, offset = item
            with self.work.source.path(blob.sha256).open("rb") as src:
                src.seek(offset)
                agent.put_blob(session, blob.sha256, blob.size, offset, src)
            with lock:
                done = self.report["sent_bytes"] + blob.size - offset
                self.report.update(sent_bytes=done, sent_blobs=self.report["sent_blobs"] + 1)
                self.emit("sending", done=done, total=plan.send_bytes)

        small = [i for i in plan.send if i[0].size - i[1] < SMALL_BLOB]
        with ThreadPoolExecutor(max_workers=SEND_CHANNELS) as pool:
            list(pool.map(put, small))  # the first failure is raised here
        for item in plan.send:
            if item not in small:
                put(item)
        return int(self.report["sent_bytes"])

    def verify_blobs(self, plan: DevicePlan) -> None:
        blobs = self.agent.blobs_have([f["sha256"] for f in plan.files])
        if blobs.missing:
            raise FleetError(f"{len(blobs.missing)} blob(s) still missing after sending "
                             f"(first {blobs.missing[0][:12]})")

    def stage(self, plan: DevicePlan, target: Target) -> None:
        import json

        self.agent.call("app", "stage", "-", stdin=json.dumps(plan.release(target)).encode())

    def gate(self, name: str, health: dict[str, Any]) -> Any:
        """Run the device's gate (`app commit`), or wait for the verdict of the supervisor
        already running it; the app's settled state."""
        limits = {**GATE_DEFAULTS, **health}
        wait = float(limits["startup_s"]) + float(limits["window_s"]) + 60.0
        try:
            self.agent.call("app", "commit", name, timeout=wait)
        except AgentCallError as exc:
            if exc.code not in ("busy", "wrong-state", "rolled-back"):
                raise
        deadline = time.monotonic() + wait
        while True:
            app = self.agent.app_list().get(name)
            if app is None:
                raise FleetError(f"{name} is gone from the device")
            if app.state in SETTLED or time.monotonic() > deadline:
                return app
            time.sleep(1.0)  # the device's own gate is running: ask again in a moment
