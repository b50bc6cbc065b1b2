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
size. The steps are those of a push rollout: download (hash checked),
install (the bundle's own signature and hashes checked while streaming),
activate, reboot, commit, and the health gate: the job succeeds only when the
device runs the target version after the reboot and its self-test passed; a
failed self-test rolls back and fails the job. On a real device the reboot
is real and the job is picked up again after boot (its execution is then
IN_PROGRESS, and the reported step says where it stood); a lab device
(FLEET_ROOT is not ``/``) runs the same boot logic in place.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from fleet_runtime import slots
from fleet_runtime.bundle import BundleError
from fleet_runtime.layout import Layout, read_json

OPERATION = "fleet-ota"
DOWNLOAD_TIMEOUT_S = 60.0
log = logging.getLogger("fleet.jobs")


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
        try:
            details = self._steps(job_id, document, execution)
        except JobFailed as exc:
            details = {"step": exc.step, "code": exc.code, "reason": exc.message[:900],
                       "version": slots.software_version(self.layout)}
            self.update(job_id, "FAILED", details)
            return {"jobId": job_id, "status": "FAILED", **details}
        self.update(job_id, "SUCCEEDED", details)
        return {"jobId": job_id, "status": "SUCCEEDED", **details}

    def _steps(self, job_id: str, doc: dict[str, Any], execution: dict[str, Any]) -> dict[str, str]:
        if doc.get("operation") != OPERATION:
            raise JobFailed("accept", "unknown-operation",
                            f"job document operation {doc.get('operation')!r} is not {OPERATION}")
        target = str(doc.get("version", ""))
        if self._rebooted_into(target, execution):
            return self._commit(job_id, target)
        if slots.software_version(self.layout) == target:
            return {"step": "done", "version": target, "changed": "false"}
        path = self._download(job_id, doc.get("bundle") or {})
        self._install(job_id, path)
        self._step(job_id, "activate", lambda: slots.activate(self.layout))
        self.update(job_id, "IN_PROGRESS", {"step": "reboot", "version": target})
        if not self._reboot():
            return {"step": "reboot", "version": target}  # the job continues after boot
        return self._commit(job_id, target)

    def _rebooted_into(self, target: str, execution: dict[str, Any]) -> bool:
        status = execution.get("statusDetails") or {}
        step = status.get("step") if isinstance(status, dict) else None
        return execution.get("status") == "IN_PROGRESS" and step == "reboot" and bool(target)

    def _download(self, job_id: str, spec: dict[str, Any]) -> Path:
        self.update(job_id, "IN_PROGRESS", {"step": "download"})
        incoming = slots.incoming_dir(self.layout)
        incoming.mkdir(parents=True, exist_ok=True)
        dest = incoming / f"job-{job_id}.bundle"
        digest, size = hashlib.sha256(), 0
        url = str(spec.get("url", ""))
        if not url.startswith(("https://", "http://")):
            raise JobFailed("download", "bad-url", "the job's bundle URL is not http(s)")
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp, \
                    dest.open("wb") as out:  # noqa: S310 - scheme checked above
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
        except (OSError, KeyError, ValueError) as exc:
            dest.unlink(missing_ok=True)
            raise JobFailed("download", "download-failed",
                            f"bundle download failed: {exc}") from exc
        if digest.hexdigest() != spec.get("sha256") or size != int(spec.get("size", size)):
            dest.unlink(missing_ok=True)
            raise JobFailed("download", "checksum", "downloaded bundle does not match the job's "
                            "SHA-256/size; refusing to install it")
        return dest

    def _install(self, job_id: str, path: Path) -> None:
        self.update(job_id, "IN_PROGRESS", {"step": "install"})
        try:
            with path.open("rb") as stream:
                slots.install(self.layout, stream)
        except (BundleError, slots.SlotError) as exc:
            raise JobFailed("install", exc.code, exc.message) from exc
        except OSError as exc:
            raise JobFailed("install", "os-error", str(exc)) from exc
        finally:
            path.unlink(missing_ok=True)

    def _step(self, job_id: str, step: str, action: Any) -> Any:
        self.update(job_id, "IN_PROGRESS", {"step": step})
        try:
            return action()
        except slots.SlotError as exc:
            raise JobFailed(step, exc.code, exc.message) from exc

    def _reboot(self) -> bool:
        """True when the reboot happened in place (lab); False when the machine goes down."""
        if self.layout.root.resolve() != Path("/"):
            slots.boot(self.layout)  # a lab device: the same boot logic, in place
            return True
        subprocess.Popen(["sh", "-c", "sleep 2; systemctl reboot || /sbin/reboot"],
                         start_new_session=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        return False

    def _commit(self, job_id: str, target: str) -> dict[str, str]:
        self.update(job_id, "IN_PROGRESS", {"step": "commit", "version": target})
        running = slots.software_version(self.layout)
        try:
            if running != target:
                raise slots.SlotError("fallback", f"booted {running}, not {target}")
            slots.commit(self.layout)
        except slots.SlotError as exc:
            self._rollback(exc.message)
            raise JobFailed("commit", exc.code, f"rolled back: {exc.message}") from exc
        return {"step": "done", "version": target, "slot": slots.active_slot(self.layout),
                "changed": "true"}

    def _rollback(self, reason: str) -> None:
        try:
            slots.rollback(self.layout, reason)
            if self.layout.root.resolve() != Path("/"):
                slots.boot(self.layout)
        except slots.SlotError as exc:
            log.error("rollback after failed job: %s", exc.message)

    def update(self, job_id: str, status: str, details: dict[str, Any]) -> None:
        """UpdateJobExecution over MQTT; statusDetails values must be strings."""
        body = {"status": status, "statusDetails": {k: str(v) for k, v in details.items()},
                "clientToken": f"{self.thing}-{int(time.time() * 1000) % 10**9}"[:64]}
        self.client.publish(f"{self.topics['base']}/{job_id}/update", body)
