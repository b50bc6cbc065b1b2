"""An OTA update as rollout work (kind ``ota``): decide, apply, accept, verify, probe.

The engine is generic (``work.py`` is the contract); this module is what makes
it roll out a bundle. `decide` is `fleet.ota.plan_task`: the device's slot
facts and `fleet.decisions.decide_update`, which `apply`
(`fleet.ota.install_bundle`: check, upload, install, activate, reboot, verify,
commit or roll back) runs as its first step, so plan and rollout cannot
disagree. The install's `verify` step asks the device after the reboot for its
version, self-test and health, and nothing is committed without it. `accept`
is the runner's health gate on that report: a device counts as done only on
what it reported (target version, not failing, committed), never on an exit
status, and at no extra device call. After a crash, `verify` (this class's)
asks everything afresh (committed, version, health) and changes nothing; a
device not yet done is continued by `apply` from its own state.

>>> work = OtaWork.for_bundle(project, Path("out/firmware/os-1.1.0.bundle"))  # doctest: +SKIP
>>> runner = RolloutRunner(policy, accept=work.accept, probe=work.probe(nr))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nornir.core import Nornir
from nornir.core.inventory import Host
from nornir.core.task import MultiResult, Result, Task

from fleet.agent import agent_for
from fleet.errors import FleetError
from fleet.facts import Slots
from fleet.project import Project
from fleet.rollout.work import Progress

KIND = "ota"
SAFE_TO_STOP = ("upload", "install", "activate")


class Cancelled(FleetError):
    """The rollout stopped waiting for this device; its task ends at the next safe step."""


@dataclass
class OtaWork:
    """Everything a rollout needs to apply one bundle to devices."""

    project: Project
    bundle: Path
    version: str
    name: str
    health_flags: list[str] = field(default_factory=list)
    progress: Progress | None = None
    cancelled: set[str] = field(default_factory=set)
    fell_back: dict[str, str] = field(default_factory=dict)  # device -> why it is not redone
    reboot_timeout: float = 300.0  # how long a rebooted device may take: the policy's offline_wait
    kind = KIND

    @property
    def artifact(self) -> Path:
        return self.bundle

    @classmethod
    def from_header(cls, project: Project, header: dict[str, Any],
                    progress: Progress | None = None) -> OtaWork:
        """Rebuild the work of a journaled rollout (resume, retry)."""
        work = cls.for_bundle(project, Path(str(header["artifact"])), progress)
        wait = (header.get("policy") or {}).get("offline_wait")
        if isinstance(wait, (int, float)) and wait > 0:
            work.reboot_timeout = float(wait)
        return work

    @classmethod
    def for_bundle(cls, project: Project, bundle: Path, progress: Progress | None = None
                   ) -> OtaWork:
        from fleet import health, ota

        manifest = ota.read_target(bundle)
        return cls(project, bundle.resolve(), manifest.version, manifest.name,
                   health.agent_flags(project), progress)

    def decide(self, task: Task) -> Result:
        """What `apply` would do on this device, read-only (`fleet ota plan`)."""
        from fleet.ota import plan_task

        return plan_task(task, self.bundle)

    @property
    def apply(self) -> Callable[..., Result]:
        from fleet.ota import install_bundle

        return install_bundle

    def params(self) -> dict[str, Any]:
        return {"bundle_path": str(self.bundle), "project": self.project,
                "health_flags": self.health_flags, "progress": self._progress,
                "reboot_timeout": self.reboot_timeout}

    def cancel(self, host: Host) -> None:
        """The runner gave up on `host` (device_timeout): stop before it changes anything."""
        self.cancelled.add(host.name)

    def _progress(self, device: str, step: str, fields: dict[str, Any]) -> None:
        # Only before activation: from then on install_bundle finishes or rolls back by
        # itself, which is safer than leaving a slot armed for the next boot.
        if device in self.cancelled and step in SAFE_TO_STOP and fields.get("status") == "start":
            raise Cancelled(f"{device}: stopped before {step}: past device_timeout")
        if device in self.fell_back and step in ("upload", "install"):
            raise Cancelled(self.fell_back[device])
        if self.progress is not None:
            self.progress(device, step, fields)

    def header(self) -> dict[str, Any]:
        """What the journal keeps so `resume` can rebuild this work."""
        return {"kind": KIND, "artifact": str(self.bundle), "version": self.version,
                "artifact_name": self.name}

    # gate, settle, probe ---------------------------------------------------------
    gate = None  # no extra device call: `accept` reads what the device reported

    def accept(self, multi: MultiResult) -> str | None:
        """The health gate on install_bundle's report: the device said, after the reboot, that it
        runs the target version and is not failing (`verify`), and the commit answered with
        the target version; or it already ran the target before (`check`). An exit status
        alone never counts."""
        report = multi[0].result if isinstance(multi[0].result, dict) else {}
        steps = {s["step"]: s for s in report.get("steps", [])}
        if not multi[0].changed and report.get("before") == self.version:
            return None
        verify, commit = steps.get("verify") or {}, steps.get("commit") or {}
        seen: dict[str, Any] = verify["detail"] if isinstance(verify.get("detail"), dict) else {}
        if not verify.get("ok") or seen.get("software") != self.version:
            return f"no post-reboot report of {self.version} (saw {seen.get('software')})"
        if seen.get("verdict") == "failing":
            return "health failing after the reboot"
        done: dict[str, Any] = commit["detail"] if isinstance(commit.get("detail"), dict) else {}
        if not commit.get("ok") or done.get("version") != self.version:
            return f"the commit did not report {self.version}"
        return None

    def full_gate(self, task: Task) -> Result:
        """Version and health, both asked afresh (used when this process did not watch the
        install, i.e. after a crash)."""
        health = agent_for(task).health(*self.health_flags)
        problems = []
        if health.software != self.version:
            problems.append(f"reports {health.software}, expected {self.version}")
        if health.verdict == "failing":
            problems.append(f"health failing: {health.reason}")
        if problems:
            return Result(task.host, failed=True, result="; ".join(problems))
        return Result(task.host, result={"software": health.software, "verdict": health.verdict})

    def verify(self, task: Task) -> Result:
        """After a controller crash: is the device already done, i.e. idle (committed) on the
        target and not failing? Read-only: a device anywhere else (installing, installed,
        activated, on trial) is continued by `install_bundle` from its own state, which
        commits only what it verified. Waits (bounded) for an install still running."""
        from fleet.ota import INSTALL_WAIT_S

        slots = agent_for(task).slots(wait_s=INSTALL_WAIT_S)
        if slots.state != "idle":
            return Result(task.host, failed=True, result=f"slot state {slots.state}")
        self._note_fallback(task.host.name, slots)
        return self.full_gate(task)

    def _note_fallback(self, device: str, slots: Slots) -> None:
        """A device whose trial boots of this very bundle ran out while no controller
        watched fell back by itself: the controller that died would have counted it
        failed, so resume does too instead of installing the bundle a second time."""
        from fleet_runtime.slots import FALLBACK_REASON

        from fleet.ota import read_target

        name = slots.fell_back_from(read_target(self.bundle).digest, FALLBACK_REASON)
        if name is not None:
            self.fell_back[device] = (
                f"fell back by itself from {self.version} (slot {name}: {FALLBACK_REASON}) "
                "while the controller was down; not installed again: "
                "`fleet ota retry --failed` tries it again")

    def probe(self, nr: Nornir) -> Callable[[Host], bool]:
        return ssh_probe(nr)


def ssh_probe(nr: Nornir) -> Callable[[Host], bool]:
    """``probe(host) -> bool``: does the device answer SSH with its pinned key now? The
    connection stays open for the task that follows. (Every SSH work kind's probe.)"""
    from fleet.transport import CONNECTION_NAME

    def reachable(host: Host) -> bool:
        try:
            session = host.get_connection(CONNECTION_NAME, nr.config)
            if not session.transport.is_active():  # a cached connection that died
                _drop(host, CONNECTION_NAME)
                host.get_connection(CONNECTION_NAME, nr.config)
            return True
        except Exception:  # unreachable, refused, timed out: all mean "offline"
            _drop(host, CONNECTION_NAME)
            return False

    return reachable


def _drop(host: Host, name: str) -> None:
    """Forget a dead cached connection so the next use reconnects."""
    if name in host.connections:
        try:
            host.close_connection(name)
        except Exception:  # a dead transport may fail to close; it is gone anyway
            host.connections.pop(name, None)
