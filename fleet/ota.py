"""OTA on one device: the Nornir task the CLI and the rollout engine run per device.

``install_bundle`` walks: check (facts + compatibility, refused before any
upload) -> install (the bundle streams into ``fleet-agent install -``, which
verifies the signature and every file's SHA-256 while writing the inactive
slot, keeps the bytes received for a resume, and then activates the slot for
its trial boots) -> reboot -> verify (the device reports the target version, its
self-test and health pass) -> commit. A failure after activation rolls back
(agent ``rollback`` + reboot) and the Result says why. An interrupted transfer
is resumed by an ``upload`` step (SFTP from the bytes kept) before installing
from the file. Each step is a subtask, so processors see it; byte-level
progress goes to ``progress``.

The walk starts from the device's own state, so running it again after the
controller died never installs twice: ``check`` waits (bounded) for an install
still running, and a slot that already holds the target (same manifest hash,
files re-hashed) is not written again: an ``installed`` one is activated, an
``activated`` one rebooted, one on ``trial`` verified and committed (or rolled
back).

>>> nr.run(task=install_bundle,
...        bundle_path="out/firmware/edgefleet-os-1.1.0.bundle")   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from fleet_runtime import bundle
from fleet_runtime.bundle import BundleError, Manifest
from nornir.core.exceptions import NornirSubTaskError
from nornir.core.task import Result, Task

from fleet.agent import Agent, agent_for
from fleet.decisions import Change, Decision, NoChange, Refusal, decide_update
from fleet.errors import AgentCallError, FleetError, UsageError
from fleet.facts import Health, Slots
from fleet.project import Project
from fleet.reboot import Restarter, restarter_for
from fleet.transport import CONNECTION_NAME

Progress = Callable[[str, str, dict[str, Any]], None]  # (device, step, fields)
STEPS = ("check", "install", "reboot", "verify", "commit")  # + "upload" to resume
INSTALL_WAIT_S = 120  # how long `check` waits for an install already running on the device


# ---------------------------------------------------------------------------- bundle facts


def read_target(path: Path) -> Manifest:
    """A bundle's manifest, read from its first member without extracting (no signature check)."""
    try:
        with open(path, "rb") as fh:
            return bundle.read_manifest(fh)
    except FileNotFoundError:
        raise UsageError(f"no bundle at {path}",
                         fix="check the path, or `fleet firmware build`") from None
    except BundleError as exc:
        raise UsageError(f"not a usable bundle: {exc.code}: {exc.message}",
                         where=str(path)) from None


def target_version(path: Path) -> str:
    """The version `path` installs (what a rollout's health gate expects devices to report)."""
    return read_target(path).version


# ---------------------------------------------------------------------------- the report


@dataclass
class OtaReport:
    device: str
    target: str
    before: str | None = None
    after: str | None = None
    rolled_back: bool = False
    reason: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"device": self.device, "target": self.target, "before": self.before,
                "after": self.after, "rolled_back": self.rolled_back, "reason": self.reason,
                "steps": self.steps}

    def diff(self) -> str:
        if self.before == self.after and not self.rolled_back:
            return ""
        line = f"software: {self.before} -> {self.target}"
        return line + (f" -> {self.after} (rolled back)" if self.rolled_back else "")


class StepFailed(Exception):
    def __init__(self, step: str, reason: str) -> None:
        super().__init__(reason)
        self.step, self.reason = step, reason


def _reason(exc: BaseException | None, fallback: Any) -> str:
    if isinstance(exc, FleetError):
        return exc.line()
    if exc is not None:
        return f"{type(exc).__name__}: {exc}"
    return str(fallback)


@dataclass
class _Run:
    """One device's walk through the steps (keeps the task function short)."""

    task: Task
    report: OtaReport
    progress: Progress | None
    decision: Decision | None = None  # what `check` decided; the steps after it apply it

    def emit(self, step: str, **fields: Any) -> None:
        if self.progress:
            self.progress(self.task.host.name, step, fields)

    def step(self, name: str, fn: Callable[..., Result], **kwargs: Any) -> Any:
        self.emit(name, status="start")
        started = time.monotonic()
        try:
            multi = self.task.run(task=fn, name=f"ota.{name}", severity_level=logging.DEBUG,
                                  run=self, **kwargs)
        except NornirSubTaskError as exc:
            first = exc.result[0]
            reason = _reason(first.exception, first.result)
            self._record(name, started, False, reason)
            raise StepFailed(name, reason) from None
        self._record(name, started, True, multi[0].result)
        return multi[0].result

    def _record(self, name: str, started: float, ok: bool, detail: Any) -> None:
        seconds = round(time.monotonic() - started, 3)
        self.report.steps.append({"step": name, "ok": ok, "seconds": seconds, "detail": detail})
        self.emit(name, status="done" if ok else "failed", seconds=seconds)


# ---------------------------------------------------------------------------- steps


def _both(first: Callable[[], Any], second: Callable[[], Any]) -> tuple[Any, Any]:
    """Two agent calls at once over the same SSH connection (two channels): half the wait."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        later = pool.submit(second)
        return first(), later.result()


def read_facts(task: Task, manifest: Manifest) -> Slots:
    """The slot facts an update decides on: asked after waiting (bounded) for an install
    still running, with the re-hash of a slot an earlier run left holding this bundle."""
    agent = agent_for(task)
    slots = agent.slots(wait_s=INSTALL_WAIT_S)
    if slots.holding(manifest.digest) is not None:
        slots = replace(slots, verify=agent.slots(verify=True).verify)
    return slots


def check_device(task: Task, manifest: Manifest) -> tuple[Slots, Decision]:
    """Facts, then the decision: what `plan` shows and what `install_bundle` applies."""
    slots = read_facts(task, manifest)
    return slots, decide_update(slots, manifest)


def plan_task(task: Task, bundle_path: str | Path) -> Result:
    """Nornir task for `fleet ota plan`: the decision install_bundle would act on, read-only.
    ``state`` is change, current, refused (with ``reason``) or offline (with ``reason``)."""
    manifest = read_target(Path(bundle_path))
    try:
        slots, decision = check_device(task, manifest)
    except FleetError as exc:
        return Result(task.host, result={"state": "offline", "reason": exc.line()})
    row: dict[str, Any] = {"state": PLAN_STATE[type(decision)], "software": slots.software}
    if isinstance(decision, Refusal):
        row["reason"] = decision.reason
    return Result(task.host, result=row)


PLAN_STATE = {Change: "change", NoChange: "current", Refusal: "refused"}


def _check(task: Task, run: _Run, manifest: Manifest) -> Result:
    slots, decision = check_device(task, manifest)
    run.decision = decision
    if isinstance(decision, Refusal):
        return Result(host=task.host, failed=True, result=decision.reason)
    facts: dict[str, Any] = {
        "software": slots.software, "state": slots.state, "boots": slots.boots,
        "incoming": slots.incoming, "slot": slots.active, "committed": slots.committed_version,
        "held": decision.resume_from if isinstance(decision, Change) else None}
    return Result(host=task.host, result=facts)


def _partial(task: Task, remote: str) -> int:
    """Bytes of an earlier, interrupted transfer kept on the device (0 if none)."""
    session = task.host.get_connection(CONNECTION_NAME, task.nornir.config)
    try:
        return int(session.sftp.stat(remote + ".part").st_size or 0)
    except FileNotFoundError:
        return 0


def _upload(task: Task, run: _Run, path: Path, remote: str, resumed: int) -> Result:
    """Finish an interrupted transfer over SFTP from where it stopped."""
    session = task.host.get_connection(CONNECTION_NAME, task.nornir.config)
    started = time.monotonic()
    # Verified by the install that follows: the device checks the signature and every
    # file's SHA-256 while reading it, so a second pass over the upload would add nothing.
    sha256 = bundle.sha256_file(path)
    session.put(path, remote, verify=lambda _part: sha256,
                progress=lambda done, total: run.emit("upload", done=done, total=total))
    seconds = time.monotonic() - started
    size = path.stat().st_size
    rate = (size - resumed) / seconds / 1e6 if seconds > 0 else 0.0
    return Result(host=task.host, result={"remote": remote, "bytes": size,
                                          "resumed_from": resumed, "MBps": round(rate, 1)})


def _install(task: Task, run: _Run, remote: str, path: Path, uploaded: bool,
             trials: int) -> Result:
    """Stream the bundle into `fleet-agent install -` (kept as REMOTE.part for a resume),
    or install the file a resumed upload completed. The stream goes through the system's
    OpenSSH client when installed (`Agent.call_file`), so the controller's cipher work
    and the device's install overlap at OpenSSH's speed."""
    size = path.stat().st_size
    timeout = max(120.0, size / 10e6)
    agent = agent_for(task)
    activate = ("--activate", "--trials", str(trials))  # one call: write, then mark for trial
    if uploaded:
        answer = agent.call("install", remote, "--remove-after", *activate, timeout=timeout)
    else:
        with open(path, "rb") as src:
            answer = agent.call_file(
                "install", "-", "--save", remote, *activate, src=src, timeout=timeout,
                progress=lambda done: run.emit("install", done=done, total=size))
    if answer.get("bundle_bytes") != size:
        return Result(host=task.host, failed=True, result=(
            f"transfer incomplete: the device read {answer.get('bundle_bytes')} of {size} bytes; "
            "run the install again"))
    keep = ("slot", "version", "bytes", "files", "bundle_bytes", "activated")
    return Result(host=task.host, result={**{k: answer[k] for k in keep}, "streamed": not uploaded})


def _activate(task: Task, run: _Run, trials: int) -> Result:
    answer = agent_for(task).call("activate", "--trials", str(trials))
    return Result(host=task.host, result={"slot": answer["pending"], "version": answer["version"]})


def _reboot(task: Task, run: _Run, restarter: Restarter) -> Result:
    restarter.reboot(task)  # that it really booted is checked by `verify` (boot counter)
    return Result(host=task.host, result={"rebooted": True})


def _verify(task: Task, run: _Run, target: str, health_flags: list[str],
            require_healthy: bool, boots_before: int) -> Result:
    slots, health = _after_boot(agent_for(task), health_flags)
    selftest = slots.selftest
    problems = []
    if slots.boots <= boots_before:
        problems.append("the device answered but did not boot")
    if slots.software != target or health.software != target:
        problems.append(f"reports version {health.software}, expected {target}"
                        + (" (the device fell back)" if slots.state == "idle" else ""))
    if selftest is not None and selftest.slot == slots.active and selftest.ok is False:
        problems.append(f"self-test failed: {selftest.reason}")
    bad = {"failing"} | ({"degraded"} if require_healthy else set())
    if health.verdict in bad:
        problems.append(f"health {health.verdict}: {health.reason}")
    detail = {"software": slots.software, "verdict": health.verdict,
              "selftest": selftest.ok if selftest is not None else None}
    if problems:
        return Result(host=task.host, failed=True, result="; ".join(problems))
    return Result(host=task.host, result=detail)


def _after_boot(agent: Agent, health_flags: list[str]) -> tuple[Slots, Health]:
    """Slot state and health in one agent call (`health --slots`: one interpreter start on
    the device instead of two); an agent without the flag is asked both ways at once."""
    try:
        answer = agent.call("health", *health_flags, "--slots")
    except AgentCallError as exc:
        if exc.code != "usage":
            raise
        return cast(tuple[Slots, Health], _both(agent.slots, lambda: agent.health(*health_flags)))
    return Slots.from_answer(answer["slots"]), Health.from_answer(answer)


def _commit(task: Task, run: _Run) -> Result:
    answer = agent_for(task).call("commit")
    return Result(host=task.host, result={"slot": answer["slot"], "version": answer["version"]})


def _rollback(task: Task, run: _Run, reason: str) -> Result:
    answer = agent_for(task).call("rollback", "--reason", reason[:300])
    return Result(host=task.host, result={"slot": answer["slot"], "version": answer["version"]})


# ---------------------------------------------------------------------------- the task


def install_bundle(
    task: Task, bundle_path: str | Path, *, restarter: Restarter | None = None,
    project: Project | None = None, trials: int = 3, health_flags: list[str] | None = None,
    require_healthy: bool = False, dry_run: bool = False, progress: Progress | None = None,
    transfer: str = "stream", reboot_timeout: float = 300.0,
) -> Result:
    """Install a signed bundle on one device, fail-safe; see the module docstring.

    ``transfer="stream"`` pipes the bundle into the agent's install (one pass on
    the device); ``"sftp"`` uploads it first (resumable) and installs the file.

    ``changed`` is False when the device already runs the target version;
    ``failed`` when anything stopped it (``result["reason"]`` says what, and
    ``result["rolled_back"]`` whether the device was returned to its version).
    """
    path = Path(bundle_path)
    manifest = read_target(path)
    run = _Run(task, OtaReport(task.host.name, manifest.version), progress)
    try:
        facts = run.step("check", _check, manifest=manifest)
    except StepFailed as exc:
        return _finish(run, failed=True, reason=exc.reason)
    run.report.before = run.report.after = facts["committed"] or facts["software"]
    if isinstance(run.decision, NoChange):
        return _finish(run, changed=False, reason=run.decision.reason)
    if task.is_dry_run(dry_run or None):
        run.report.after = manifest.version
        return _finish(run, changed=True, reason="dry run: nothing changed")
    chosen = restarter or restarter_for(task.host, reboot_timeout)
    if transfer not in ("stream", "sftp"):
        raise UsageError(f"unknown transfer {transfer!r}", fix="use stream or sftp")
    return _apply(run, path, manifest, facts, chosen, trials, health_flags or [], require_healthy,
                  transfer)


def _apply(run: _Run, path: Path, manifest: Manifest, facts: dict[str, Any], restarter: Restarter,
           trials: int, health_flags: list[str], require_healthy: bool, transfer: str) -> Result:
    held = facts["held"]  # the state an interrupted run left the target slot in, or None
    try:
        if held is None:
            _write(run, path, manifest, facts, trials, transfer)
        elif held == "installed":
            run.step("activate", _activate, trials=trials)
    except StepFailed as exc:
        return _finish(run, failed=True, reason=f"{exc.step}: {exc.reason}")
    # On trial the device already booted the new slot: verify that boot, do not boot again.
    boots_before = int(facts["boots"]) - (1 if held == "trial" else 0)
    try:
        if held != "trial":
            run.step("reboot", _reboot, restarter=restarter)
        run.step("verify", _verify, target=manifest.version, health_flags=health_flags,
                 require_healthy=require_healthy, boots_before=boots_before)
        run.step("commit", _commit)
    except StepFailed as exc:
        return _recover(run, restarter, facts, f"{exc.step}: {exc.reason}")
    run.report.after = manifest.version
    return _finish(run, changed=True)


def _write(run: _Run, path: Path, manifest: Manifest, facts: dict[str, Any], trials: int,
           transfer: str) -> None:
    """Upload (when resuming a cut transfer, or asked to) and install + activate."""
    remote = f"{facts['incoming']}/{manifest.name}-{manifest.version}-{manifest.digest[:12]}.bundle"
    resumed = _partial(run.task, remote)
    upload = bool(resumed) or transfer == "sftp"
    if upload:
        run.step("upload", _upload, path=path, remote=remote, resumed=resumed)
    run.step("install", _install, remote=remote, path=path, uploaded=upload, trials=trials)


def _recover(run: _Run, restarter: Restarter, facts: dict[str, Any], why: str) -> Result:
    """Roll back to the committed slot, reboot into it, and confirm the old version runs."""
    run.report.rolled_back = True
    try:
        run.step("rollback", _rollback, reason=why)
        run.step("reboot", _reboot, restarter=restarter)
        back = run.step("verify", _verify, target=facts["committed"] or facts["software"],
                        health_flags=[],
                        require_healthy=False, boots_before=int(facts["boots"]))
        run.report.after = back["software"]
    except StepFailed as exc:
        run.report.after = None
        return _finish(run, failed=True, reason=f"{why}; rollback incomplete: {exc.step}: "
                       f"{exc.reason} (the device falls back by itself when its trials run out)")
    return _finish(run, failed=True, reason=f"rolled back to {run.report.after}: {why}")


def _finish(run: _Run, *, changed: bool = True, failed: bool = False, reason: str = "") -> Result:
    run.report.reason = reason
    if failed and run.report.after == run.report.before and not run.report.rolled_back:
        changed = False
    return Result(host=run.task.host, result=run.report.as_json(), changed=changed,
                  failed=failed, diff=run.report.diff())
