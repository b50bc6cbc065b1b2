"""The device side of AWS IoT Jobs: take OTA jobs over MQTT and run them.

`fleet-agent daemon` calls :func:`attach` once connected. The handler speaks
the documented IoT Jobs MQTT API for thing ``T``:

* subscribes ``$aws/things/T/jobs/notify-next`` (the service announces the next job)
  and ``$aws/things/T/jobs/$next/get/accepted`` (the answer to asking for it);
* publishes ``$aws/things/T/jobs/$next/get`` at start and after every job;
* reports on ``$aws/things/T/jobs/<jobId>/update``: ``IN_PROGRESS`` with the
  current step, then ``SUCCEEDED`` or ``FAILED``; ``statusDetails`` values are
  strings, as the service requires.

A job document from ``fleet ota rollout --engine iot-jobs`` (controller
``fleet/rollout/iot_jobs.py``) names the bundle by URL with its SHA-256 and
size. The handler fires ``download`` into the device-side update flow
(``fleet_runtime.flow``), the same table the push commands drive, and runs it
to its end: download, verify (hash), install (the bundle's own signature and
hashes checked while streaming), activate, reboot, the gate (self-test, then
the agent's health verdict with the fleet's thresholds from ``mqtt.json``), and
commit, or roll back. A ``fleet-app`` job (``fleet app deploy --engine iot-jobs``)
goes to ``app_jobs.py``: the same app flow as a push deploy, then the job's result. The job succeeds only when the flow is ``done``; a failed
gate rolls back and fails the job with the reason. The flow is persisted, so a
handler killed anywhere, or a real reboot, resumes it from its state when the
job is offered again (its execution is then IN_PROGRESS). ``statusDetails``
carries ``step`` (download, install, activate, reboot, commit, done) and
``state`` (the flow's exact state).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from fleet_runtime import flow, slots
from fleet_runtime.agent import app_jobs
from fleet_runtime.agent.ota import install_lock
from fleet_runtime.agent.protocol import AgentError
from fleet_runtime.layout import Layout, read_json

OPERATION = "fleet-ota"


class JobFailed(Exception):
    def __init__(self, step: str, code: str, message: str) -> None:
        super().__init__(message)
        self.step, self.code, self.message = step, code, message


def topics(thing: str) -> dict[str, str]:
    base = f"$aws/things/{thing}/jobs"
    return {"notify_next": f"{base}/notify-next", "get_next": f"{base}/$next/get",
            "get_next_accepted": f"{base}/$next/get/accepted", "base": base}


def thing_name(layout: Layout, device: dict[str, Any]) -> str:
    settings = read_json(layout.etc / "mqtt.json", default={}) or {}
    return str(settings.get("thing_name") or device.get("thing_name") or device["name"])


def attach(client: Any, layout: Layout, device: dict[str, Any]) -> JobsHandler:
    """Subscribe to this thing's job topics and ask for the next job (daemon hook)."""
    handler = JobsHandler(client, layout, thing_name(layout, device))
    handler.start()
    return handler


class JobsHandler:
    """One job at a time; MQTT callbacks only hand work to a worker thread."""

    def __init__(self, client: Any, layout: Layout, thing: str) -> None:
        self.client, self.layout, self.thing = client, layout, thing
        self.topics = topics(thing)
        self._busy = threading.Lock()
        self._seen: set[tuple[str, int]] = set()
        self.finished: list[dict[str, Any]] = []

    def start(self) -> None:
        self.client.subscribe(self.topics["notify_next"], self._on_message)
        self.client.subscribe(self.topics["get_next_accepted"], self._on_message)
        self.ask_next()

    def ask_next(self) -> None:
        self.client.publish(self.topics["get_next"], {"clientToken": self.thing[:64]})

    def _on_message(self, topic: str, message: dict[str, Any]) -> None:
        execution = message.get("execution")
        if not isinstance(execution, dict) or execution.get("status") not in ("QUEUED",
                                                                               "IN_PROGRESS"):
            return
        key = (str(execution.get("jobId")), int(execution.get("executionNumber", 0)))
        if key in self._seen or not self._busy.acquire(blocking=False):
            return  # already handled, or busy: $next/get after the current job finds it
        self._seen.add(key)
        threading.Thread(target=self._run, args=(execution,), daemon=True,
                         name=f"job-{key[0]}").start()

    def _run(self, execution: dict[str, Any]) -> None:
        try:
            self.finished.append(self.execute(execution))
        finally:
            self._busy.release()
        self.ask_next()

    # one job -------------------------------------------------------------------
    def execute(self, execution: dict[str, Any]) -> dict[str, Any]:
        job_id = str(execution["jobId"])
        document = execution.get("jobDocument") or {}
        if document.get("operation") == app_jobs.OPERATION:
            details = app_jobs.run(self.layout, job_id, document, self.update)
            status = "FAILED" if "code" in details else "SUCCEEDED"
            self.update(job_id, status, details)
            return {"jobId": job_id, "status": status, **details}
        try:
            with install_lock(self.layout, exclusive=True, wait_s=30.0):
                details = self._steps(job_id, document)
        except (JobFailed, AgentError, flow.FlowError) as exc:
            step, code = getattr(exc, "step", "accept"), exc.code
            details = {"step": step, "code": code, "reason": exc.message[:900],
                       "version": slots.software_version(self.layout)}
        if details.get("status") == "IN_PROGRESS":
            return {"jobId": job_id, **details}  # the machine reboots; resumed after the boot
        status = "FAILED" if "code" in details else "SUCCEEDED"
        self.update(job_id, status, details)
        return {"jobId": job_id, "status": status, **details}

    def _steps(self, job_id: str, doc: dict[str, Any]) -> dict[str, str]:
        if doc.get("operation") != OPERATION:
            raise JobFailed("accept", "unknown-operation",
                            f"job document operation {doc.get('operation')!r} is not "
                            f"{OPERATION} or {app_jobs.OPERATION}")
        target = str(doc.get("version", ""))
        ctx = self._context(job_id)
        current = flow.read(self.layout)
        if current.get("job") == job_id:
            return self._outcome(flow.drive(ctx), target)  # resumed after a reboot or a kill
        if slots.software_version(self.layout) == target and \
                slots.read_state(self.layout)["state"] == "idle":
            return {"step": "done", "version": target, "changed": "false"}
        spec = doc.get("bundle") or {}
        download = {"url": spec.get("url"), "sha256": spec.get("sha256"),
                    "size": spec.get("size"),
                    "path": str(slots.incoming_dir(self.layout) / f"job-{job_id}.bundle")}
        try:
            done = flow.drive(ctx, flow.Event.DOWNLOAD, **flow.start_changes(
                "pull", job=job_id, download=download, target={"version": target}))
        except flow.FlowError as exc:
            raise JobFailed("accept", exc.code, exc.message) from exc
        return self._outcome(done, target)

    def _context(self, job_id: str) -> flow.Context:
        last = [""]

        def report(doc: dict[str, Any]) -> None:
            step = STEP.get(flow.State(doc["state"]))
            if step and step != last[0]:
                last[0] = step
                details = {"step": step, "state": doc["state"]}
                if step == "reboot":
                    details["version"] = str((doc.get("target") or {}).get("version"))
                self.update(job_id, "IN_PROGRESS", details)

        return flow.Context(self.layout, on_enter=report)

    def _outcome(self, doc: dict[str, Any], target: str) -> dict[str, str]:
        state = flow.State(doc["state"])
        if state is flow.State.DONE:
            return {"step": "done", "version": target, "slot": slots.active_slot(self.layout),
                    "changed": "true", "state": state.value}
        outcome = doc.get("outcome") or {}
        if state in (flow.State.FAILED, flow.State.RESTORING):
            return {"step": STEP.get(flow.State(outcome.get("in", "failed")), "commit"),
                    "code": str(outcome.get("code", "failed")), "reason": flow.reason(doc)[:900],
                    "version": slots.software_version(self.layout), "state": state.value}
        return {"status": "IN_PROGRESS", "step": STEP.get(state, state.value),
                "state": state.value}

    def update(self, job_id: str, status: str, details: dict[str, Any]) -> None:
        """UpdateJobExecution over MQTT; statusDetails values must be strings."""
        body = {"status": status, "statusDetails": {k: str(v) for k, v in details.items()},
                "clientToken": f"{self.thing}-{int(time.time() * 1000) % 10**9}"[:64]}
        self.client.publish(f"{self.topics['base']}/{job_id}/update", body)


# The job step each flow state reports (the steps a job document lists).
STEP = {
    flow.State.DOWNLOADING: "download", flow.State.VERIFYING: "download",
    flow.State.INSTALLING: "install", flow.State.INSTALLED: "install",
    flow.State.ACTIVATING: "activate", flow.State.ACTIVATED: "activate",
    flow.State.REBOOTING: "reboot", flow.State.CHECKING: "commit",
    flow.State.COMMITTING: "commit", flow.State.ROLLING_BACK: "commit",
    flow.State.RESTORING: "commit", flow.State.FAILED: "commit",
}
