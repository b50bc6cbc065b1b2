"""An application deployment as rollout work (kind ``app``): decide, apply, accept, verify.

`decide` reads the device in one agent call (``fleet-agent batch``: `info`,
`app list`, `blobs have`, the RTSP probe of the bound cameras) and calls
`fleet.apps.decide.decide_app`; `apply` (`AppWork.deploy`) makes that same
decision first, then walks the status model, each step a subtask the journal
records (``device_step``) and the progress callback sees:

    sending (bytes) -> verifying -> staged -> switching -> health_check
    -> succeeded | rolled_back | failed      (current: nothing to do)

Only missing blobs travel (fleet/apps/send.py), each hashed by the device on
arrival and confirmed in its answer (that is `verifying`: no second round
trip); an interrupted blob continues from its ``partial`` size. `staged`
stages and switches in one agent process (stage, the sealed cameras, the
supervisor, ``app activate VERSION --no-wait``); the device holds the health
gate and rolls back by itself (`app commit`, whose answer is the verdict; if
the device's supervisor is already running the gate, the controller waits
for its verdict). Deploying one app never touches another. A `PreStage`
(fleet/apps/prestage.py) may have sent a device's blobs while the batch before
it held its gate; the walk then finds nothing to send.

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

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fleet_runtime.appbundle import AppManifest
from nornir.core import Nornir
from nornir.core.exceptions import NornirSubTaskError
from nornir.core.inventory import Host
from nornir.core.task import MultiResult, Result, Task

from fleet.agent import Agent, Call, agent_for, checked
from fleet.apps.decide import DevicePlan, Target, decide_app, version_files
from fleet.apps.reach import PROBE_TIMEOUT_S, probe_request, probe_statuses
from fleet.apps.send import Sent, send_blobs
from fleet.apps.source import BlobSource
from fleet.errors import AgentCallError, FleetError, UsageError
from fleet.facts import Blobs, DeployedApp, DeployedApps, Info
from fleet.project import Project
from fleet.rollout.work import Progress
from fleet.transport import CONNECTION_NAME

if TYPE_CHECKING:
    from fleet.apps.prestage import PreStage

Planned = tuple[DevicePlan, Target, "DeviceConfig"]
KIND = "app"
SETTLED = ("done", "failed", "rolled-back")
REUSE_S = 120.0  # `fleet app deploy`: how old a decision its devices' turns may act on
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
    # devices `verify` found on their way to the target after a controller crash: if the
    # walk's check then finds the target committed, the device finished it by itself
    settling: set[str] = field(default_factory=set)
    allow_unreachable: bool = False  # deploy even where a bound camera fails the RTSP probe
    engine: str = "ssh"  # iot-jobs: one shared job document, no per-device files
    uri_cameras: dict[str, dict[str, str]] = field(default_factory=dict)  # device -> node: URI
    prestage: PreStage | None = None  # sends a batch's blobs during the gates before it
    # A decision this recent (the deploy's plan, or an early send's) is what the device's
    # turn acts on, instead of asking the device again; 0: every turn decides anew.
    reuse_s: float = 0.0
    decided: dict[str, tuple[float, Planned]] = field(default_factory=dict)
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
        """The device's facts and the decision: what `plan` shows and `deploy` acts on."""
        return self.plan_with(agent_for(task), task.host)

    def plan_with(self, agent: Agent, host: Host) -> tuple[DevicePlan, Target, DeviceConfig]:
        """`plan_device` with this agent: the facts in one agent call (`info`, `app list`,
        `blobs have` for every blob the bundle and the device's files name, and the RTSP
        probe of the bound cameras when any is bound and the configuration is not refused)."""
        target, config = self.target_for(host)
        shas = {f.sha256 for f in self.manifest.files} | \
            {hashlib.sha256(data).hexdigest() for data in config.files().values()}
        probe = None if target.refusal else probe_request(config)
        calls: list[Call] = [(["info"], None), (["app", "list"], None),
                             (["blobs", "have", *sorted(shas)], None)]
        if probe is not None:
            calls.append((["rtsp-probe"], probe))
        answers = agent.batch(calls, timeout=PROBE_TIMEOUT_S * 4 + 10 if probe else None)
        info, apps, blobs = (Info.from_answer(_nth(agent, answers, 0)),
                             DeployedApps.from_answer(_nth(agent, answers, 1)),
                             Blobs.from_answer(_nth(agent, answers, 2)))
        files = version_files(target, info.arch or "unknown")
        cameras = None if isinstance(files, str) or probe is None else \
            probe_statuses(probe, answers[3] if len(answers) > 3 else None)
        plan = decide_app(info, apps, None if isinstance(files, str) else blobs, target, files,
                          cameras, self.allow_unreachable, engine=self.engine, device=host.name)
        self.uri_cameras[host.name] = plan.release(target).get("cameras") or {}
        self.remember(host.name, (plan, target, config))
        return plan, target, config

    def remember(self, device: str, planned: Planned) -> None:
        if self.reuse_s > 0:
            self.decided[device] = (time.monotonic(), planned)

    def turn_plan(self, task: Task) -> Planned:
        """The decision the device's turn acts on: one made within `reuse_s` (each is used
        once), else a new one. The device itself refuses a stage or a switch that no longer
        fits (another deploy in flight, another version staged), and its gate judges the
        cameras, so a decision seconds old loses no guarantee."""
        made, planned = self.decided.pop(task.host.name, (0.0, None))
        if planned is not None and time.monotonic() - made <= self.reuse_s:
            return planned
        return self.plan_device(task)

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
        if self.prestage is not None:
            self.prestage.wait(task.host)
        if task.host.name in self.fell_back:  # seen by `verify` after a controller crash
            return run.finish("rolled_back", self.fell_back[task.host.name])
        try:
            plan, target, config = run.step("check", lambda t: self.turn_plan(t))
        except StepFailed as exc:
            return run.finish("failed", f"check: {exc.reason}")
        run.report.update(before=plan.current, platform=plan.platform,
                          send_bytes=plan.send_bytes)
        if plan.state == "refused":
            return run.finish("failed", f"refused: {plan.reason}")
        if plan.state == "current":
            if task.host.name in self.settling:  # its gate passed between verify and check
                run.report["after"] = plan.current
                return run.finish("succeeded", "")
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
        if app is not None and app.target == self.version and app.state not in (
                "done", "rolled-back", "rolling-back", "failed", "idle"):
            self.settling.add(task.host.name)
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
        """Three agent calls past the check: `staged` stages and switches in one (stage,
        the sealed cameras, the supervisor, ``activate --no-wait``: the same commands, one
        agent process); `health_check` runs the device's gate (``app commit``)."""
        name, version = target.name, target.version
        switch = self.switch_calls(name, version, config.sealed())
        if plan.resume_from is None:
            sent = self.step("sending", lambda t: self.send(plan))
            self.step("verifying", lambda t: self.verify_sent(plan, sent))
            release = json.dumps(plan.release(target)).encode()
            self.step("staged", lambda t: self.run_calls(
                [(["app", "stage", "-"], release), *switch], switching_at=len(switch)))
        elif plan.resume_from not in ("checking", "committing"):
            self.step("switching", lambda t: self.run_calls(switch, switching_at=None))
        verdict = self.step("health_check", lambda t: self.gate(name, target.health))
        self.report["after"] = verdict.committed
        if verdict.state == "done" and verdict.committed == version:
            return self.finish("succeeded", "")
        if verdict.state == "rolled-back":
            return self.finish("rolled_back", f"rolled back by the device: {verdict.reason}")
        return self.finish("failed", f"{name} ended {verdict.state}: {verdict.reason}")

    @staticmethod
    def switch_calls(name: str, version: str, sealed: bytes | None) -> list[Call]:
        """The switch: the camera credentials (the device's 0600 cameras.json, via stdin
        only), the app's supervisor, then ``activate`` of exactly this staged version."""
        calls: list[Call] = [(["cameras", "set", "-"], sealed)] if sealed else []
        return [*calls, (["app", "start", name], None),
                (["app", "activate", name, version, "--no-wait"], None)]

    def run_calls(self, calls: list[Call], switching_at: int | None) -> None:
        """`calls` in one agent process, each checked; `switching_at`: the index of the call
        that switches when this one batch also stages (shown as its own step)."""
        def started(index: int) -> None:  # shown only: the device runs the batch to its end
            if index == switching_at and self.work.progress is not None:
                self.work.progress(self.task.host.name, "switching", {"status": "start"})

        for answer in self.agent.batch(calls, on_call=started):
            checked(self.task.host.name, answer)

    def send(self, plan: DevicePlan) -> Sent:
        """Each missing blob, streamed from the bytes the device already holds (send.py)."""
        session = self.task.host.get_connection(CONNECTION_NAME, self.task.nornir.config)

        def sent(done: int) -> None:
            self.report.update(sent_bytes=done)
            self.emit("sending", done=done, total=plan.send_bytes)

        out = send_blobs(self.agent, session, self.work.source, plan.send, on_bytes=sent)
        self.report["sent_blobs"] = len(out.received)
        return out

    def verify_sent(self, plan: DevicePlan, sent: Sent) -> None:
        """Every blob sent was hashed by the device on arrival and confirmed in its answer;
        `app stage` checks again that every blob of the version is in the store."""
        missing = [b.sha256 for b, _ in plan.send if b.sha256 not in sent.received]
        if missing:
            raise FleetError(f"{len(missing)} blob(s) not confirmed by the device after "
                             f"sending (first {missing[0][:12]})")

    def gate(self, name: str, health: dict[str, Any]) -> Any:
        """Run the device's gate (`app commit`), or wait for the verdict of the supervisor
        already running it; the app's settled state (the commit's own answer when it ran)."""
        limits = {**GATE_DEFAULTS, **health}
        wait = float(limits["startup_s"]) + float(limits["window_s"]) + 60.0
        try:
            answer = self.agent.call("app", "commit", name, timeout=wait)
            ended = DeployedApp.from_answer(answer.get("app") or {})
            if ended.name == name and ended.state in SETTLED:
                return ended
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


def _nth(agent: Agent, answers: list[dict[str, Any]], index: int) -> dict[str, Any]:
    """The `index`th answer of a batch, checked (a batch stops at its first failure)."""
    if index >= len(answers):
        raise AgentCallError(agent.device, "protocol", f"the batch ended before call {index}")
    return checked(agent.device, answers[index])
