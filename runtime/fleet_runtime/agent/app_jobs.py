"""An application job (operation ``fleet-app``): pull mode for `fleet app deploy`.

`fleet app deploy --engine iot-jobs` puts one job document on every device:
the signed application bundle by URL with its SHA-256 and size, and the
release fields all devices share (``release``: health thresholds, camera
source URIs). The jobs handler (``jobs.py``) hands such a job here, and the
device does what the push deploy does over SSH, through the same persisted
app flow (``fleet_runtime.apps.flow``):

1. download the bundle into the incoming folder, checking size and SHA-256;
2. verify it with the device's release keys (signature, then every member),
   storing the members its platform's variant needs in the blob store;
3. build the version's release document (the variant's files plus the shared
   fields), then, under the app's lock: stage, start the supervisor, activate,
   and hold the device's own health gate: committed, or rolled back by itself.

The job succeeds only when the app is committed at the job's version; else it
fails with the flow's outcome code and reason. The flow records the job id
with the stage, so a job offered again (a daemon killed mid-gate) carries on
from the flow's state and never stages twice.
"""

from __future__ import annotations

import argparse
import hashlib
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from fleet_runtime import __version__, appbundle, slots
from fleet_runtime.agent import apps
from fleet_runtime.agent.protocol import AgentError
from fleet_runtime.apps import flow, settings
from fleet_runtime.apps.blobs import BlobError, BlobStore
from fleet_runtime.apps.flow import Event, State
from fleet_runtime.apps.release import ReleaseError, parse
from fleet_runtime.bundle import BundleError, FileEntry, Keyring
from fleet_runtime.layout import Layout, read_json

OPERATION = "fleet-app"
DOWNLOAD_TIMEOUT_S = 60.0
Report = Callable[[str, str, dict[str, Any]], None]  # (job id, status, details)

# The job step each app flow state reports.
STEP = {State.STAGING: "stage", State.STAGED: "stage", State.ACTIVATING: "activate",
        State.CHECKING: "health", State.COMMITTING: "commit", State.ROLLING_BACK: "commit"}


class AppJobFailed(Exception):
    def __init__(self, step: str, code: str, message: str) -> None:
        super().__init__(message)
        self.step, self.code, self.message = step, code, message


def run(layout: Layout, job_id: str, doc: dict[str, Any], report: Report) -> dict[str, str]:
    """Run the job to its end: the statusDetails of SUCCEEDED, or of FAILED (with ``code``)."""
    try:
        return _run(layout, job_id, doc, report)
    except AppJobFailed as exc:
        return {"step": exc.step, "code": exc.code, "reason": exc.message[:900]}
    except (AgentError, BlobError) as exc:
        return {"step": "deploy", "code": exc.code, "reason": exc.message[:900]}
    except OSError as exc:  # the disk, or the supervisor that would not start
        return {"step": "deploy", "code": "io-error", "reason": f"{exc}"[:900]}


def _run(layout: Layout, job_id: str, doc: dict[str, Any], report: Report) -> dict[str, str]:
    version = str(doc.get("version", ""))
    name = _resumed(layout, job_id)
    if name is None:  # a new job: fetch and verify the bundle, then stage it
        report(job_id, "IN_PROGRESS", {"step": "download"})
        bundle = download(layout, job_id, doc.get("bundle") or {})
        try:
            release = _release(layout, bundle, version, doc.get("release") or {})
        finally:
            bundle.unlink(missing_ok=True)
        name = str(release["name"])
        return _deploy(layout, job_id, name, version, report, release)
    return _deploy(layout, job_id, name, version, report, None)


def _resumed(layout: Layout, job_id: str) -> str | None:
    """The app this job staged already (the flow records the job id), or None."""
    for name in layout.app_names():
        if flow.read(layout, name).get("job") == job_id:
            return name
    return None


# ------------------------------------------------------------------ the bundle


def download(layout: Layout, job_id: str, spec: dict[str, Any]) -> Path:
    """The job's bundle in the incoming folder, its size and SHA-256 checked."""
    url = str(spec.get("url", ""))
    if not url.startswith(("https://", "http://")):
        raise AppJobFailed("download", "bad-url", "the job's bundle URL is not http(s)")
    dest = slots.incoming_dir(layout) / f"job-{job_id}.appbundle"
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp, \
                dest.open("wb") as out:  # noqa: S310 - scheme checked above
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
    except (OSError, ValueError) as exc:
        dest.unlink(missing_ok=True)
        raise AppJobFailed("download", "download-failed",
                           f"bundle download failed: {exc}") from None
    if digest.hexdigest() != spec.get("sha256") or size != int(spec.get("size", -1)):
        dest.unlink(missing_ok=True)
        raise AppJobFailed("download", "checksum", "downloaded bundle does not match the "
                           "job's SHA-256/size; refusing to stage it")
    return dest


class BlobSink:
    """Verified members into the blob store: only those of the device's variant."""

    def __init__(self, store: BlobStore, wanted: set[str], scratch: Path) -> None:
        self.store, self.wanted, self.scratch = store, wanted, scratch
        self._out: BinaryIO | None = None

    def begin(self, entry: FileEntry) -> None:
        keep = entry.sha256 in self.wanted and not self.store.has(entry.sha256)
        self._out = self.scratch.open("wb") if keep else None

    def write(self, data: bytes) -> None:
        if self._out is not None:
            self._out.write(data)

    def end(self, entry: FileEntry) -> None:
        if self._out is None:
            return
        self._out.close()
        self._out = None
        with self.scratch.open("rb") as fh:
            self.store.receive(fh, entry.sha256, entry.size)
        self.scratch.unlink(missing_ok=True)


def _release(layout: Layout, bundle: Path, version: str,
             shared: dict[str, Any]) -> dict[str, Any]:
    """Verify the bundle into the blob store; the release document to stage."""
    keyring = Keyring.from_dir(layout.release_keys)
    arch = str((read_json(layout.device_json, default={}) or {}).get("arch") or "unknown")
    try:
        with bundle.open("rb") as fh:
            manifest = appbundle.read_app_manifest(fh, keyring)
        if manifest.version != version:
            raise AppJobFailed("verify", "wrong-version", f"the bundle is {manifest.name} "
                               f"{manifest.version}, the job deploys {version}")
        appbundle.check_runtime(manifest, __version__)
        variant = appbundle.platform_variant(manifest, arch)
        if isinstance(variant, appbundle.Refusal):
            raise AppJobFailed("verify", "platform", variant.reason)
        store = BlobStore(layout, int(settings.load(layout)["reserve_bytes"]))
        sink = BlobSink(store, {f.sha256 for f in variant.files.values()},
                        bundle.with_suffix(".member"))
        with bundle.open("rb") as fh:
            appbundle.read_app_bundle(fh, keyring, sink)
    except BundleError as exc:
        raise AppJobFailed("verify", exc.code, exc.message) from None
    except BlobError as exc:
        raise AppJobFailed("verify", exc.code, exc.message) from None
    except settings.SettingsError as exc:
        raise AppJobFailed("verify", "bad-settings", str(exc)) from None
    files = [{"path": path, "sha256": f.sha256, "size": f.size}
             for path, f in sorted(variant.files.items())]
    doc = {"name": manifest.name, "version": version, "files": files,
           "cameras": dict(shared.get("cameras") or {}),
           "health": dict(shared.get("health") or {})}
    try:
        return parse(doc, "the job's release").as_dict()
    except ReleaseError as exc:
        raise AppJobFailed("verify", "bad-release", str(exc)) from None


# ------------------------------------------------------------------ the flow


def _deploy(layout: Layout, job_id: str, name: str, version: str, report: Report,
            release: dict[str, Any] | None) -> dict[str, str]:
    last = [""]

    def on_enter(doc: dict[str, Any]) -> None:
        step = STEP.get(State(doc["state"]))
        if step and step != last[0]:
            last[0] = step
            report(job_id, "IN_PROGRESS", {"step": step, "state": doc["state"]})

    with apps._flow(layout, name):
        ctx = flow.Context(layout, name, on_enter=on_enter)
        doc = flow.settle(ctx)
        if doc.get("job") != job_id:  # checked under the lock: a new job stages here
            if doc["state"] == "done" and doc.get("committed") == version:
                return {"step": "done", "app": name, "version": version, "changed": "false"}
            assert release is not None  # `_resumed` found no flow with this job
            doc = flow.drive(ctx, Event.STAGE, target=version, release=release,
                             outcome=None, gate=None, job=job_id)
        if doc["state"] == State.STAGED.value:
            apps.cmd_start(argparse.Namespace(app=name), layout)
            doc = flow.drive(ctx, Event.ACTIVATE)
        elif doc["state"] not in ("done", "failed", "rolled-back"):
            apps.cmd_start(argparse.Namespace(app=name), layout)
            doc = flow.drive(ctx)  # resumed past the switch: the gate decides
    return outcome(doc, name, version)


def outcome(doc: dict[str, Any], name: str, version: str) -> dict[str, str]:
    """The job's statusDetails from where the app's flow ended."""
    if doc["state"] == "done" and doc.get("committed") == version:
        return {"step": "done", "app": name, "version": version, "changed": "true",
                "state": "done"}
    result = doc.get("outcome") or {}
    reason = str(result.get("reason") or flow.hint(doc))
    if result.get("rolled_back"):
        reason = f"rolled back to {result.get('to')}: {reason}"
    return {"step": "commit", "app": name, "code": str(result.get("code") or doc["state"]),
            "reason": reason[:900], "version": str(doc.get("committed")),
            "state": doc["state"]}
