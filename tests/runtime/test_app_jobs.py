"""Application jobs (``fleet-app``, `fleet app deploy --engine iot-jobs`) on a real device daemon.

The broker is a real mosquitto over mutual TLS and the service the stand-in on
the documented IoT Jobs topics (fixtures_jobs); the job document is the one
the controller writes (``fleet.rollout.iot_jobs.job_document``), the bundle
the colour example signed by the project's release key and served over HTTP.
The device runs the same app flow as a push deploy and holds its own gate.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for fixtures

pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")

import fixtures_mqtt  # noqa: E402
from device_apps import wait_for  # noqa: E402
from fixtures_jobs import (  # noqa: E402,F401  (fixtures used by name)
    JobsService,
    bundle_server,
    daemon_procs,
    device_with_daemon,
)
from fixtures_mqtt import MqttLab  # noqa: E402
from fleet_runtime.apps import flow, supervise  # noqa: E402
from fleet_runtime.layout import Layout  # noqa: E402

from fleet import firmware  # noqa: E402
from fleet.apps import build as builder  # noqa: E402
from fleet.project import Project  # noqa: E402
from fleet.rollout.iot_jobs import job_document  # noqa: E402

mqtt_broker = fixtures_mqtt.mqtt_broker  # the session fixture, used by name below
SECRET = b"app-jobs-release-key"
NAME = "color_classifier"
CODE = "packages/123456789012-COLOR_CODE-1.0/src/application.py"
# Short windows for a test on a loaded machine; the device's defaults are 30 s and 120 s.
SHARED = {"health": {"window_s": 2, "startup_s": 90, "min_fps": 0.5, "poll_s": 0.5},
          "cameras": {"camera_node": "synthetic:64x48@10"}}
SETTLED = ("SUCCEEDED", "FAILED")


def signed(project: Project, app: Path, version: str, crash: bool = False) -> Path:
    src = project.root / "src" / version
    shutil.copytree(app, src, ignore=shutil.ignore_patterns("build_model.py", "__pycache__"))
    if crash:  # the same app whose code raises on every frame: a bug that ships
        code = src / CODE
        code.write_text(code.read_text().replace(
            "        streams = self.inputs.video_in.get()\n",
            "        raise RuntimeError('release 2 broke process_streams')\n"))
    return builder.build(project, src, passphrase=SECRET, version=version).path


def document(folder: Path, base: str, bundle: Path, version: str) -> dict[str, Any]:
    data = bundle.read_bytes()
    (folder / bundle.name).write_bytes(data)
    return job_document(f"{base}/{bundle.name}", version=version,
                        sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                        name=bundle.name, kind="app", release=SHARED)


def result(service: JobsService, job_id: str) -> dict[str, Any]:
    _, done = service.updates.wait_for(
        lambda t, m: t.endswith(f"/{job_id}/update") and m["status"] in SETTLED, 400)
    return done


def runtime_at(layout: Layout, version: str) -> bool:
    record = supervise.read_record(layout, NAME) or {}
    return record.get("version") == version and supervise.alive(record.get("child"))


def offer_again(service: JobsService, job_id: str) -> None:
    """The service offers the job once more (a new execution number, as after a restart)."""
    execution = next(e for e in service.queue if e["jobId"] == job_id)
    execution.update(status="IN_PROGRESS", executionNumber=2)
    service.client.publish(f"{service.base}/notify-next", {"execution": execution})


def test_good_version_commits_then_crashing_one_fails_and_rolls_back(
        mqtt_broker: MqttLab, tmp_path: Path, bundle_server, daemon_procs, color_app) -> None:
    project_root = tmp_path / "project"
    project_root.mkdir()
    project = Project.locate(project_root)
    key = firmware.keygen(project, passphrase=SECRET)
    layout = device_with_daemon(mqtt_broker, tmp_path / "dev", "appjobs-01", None, daemon_procs)
    layout.release_keys.mkdir(parents=True, exist_ok=True)
    shutil.copy(key.public, layout.release_keys / f"{key.key_id}.pub")
    service = JobsService(mqtt_broker, "appjobs-01")
    folder, base = bundle_server
    try:
        service.add_job("app-1", document(folder, base, signed(project, color_app, "1.0.0"),
                                          "1.0.0"))
        done = result(service, "app-1")
        assert done["status"] == "SUCCEEDED", done
        assert done["statusDetails"]["version"] == "1.0.0"
        assert all(isinstance(v, str) for v in done["statusDetails"].values())
        status = flow.status(layout, NAME)
        assert (status["state"], status["committed"], status["current"]) == \
            ("done", "1.0.0", "1.0.0")
        steps = [m["statusDetails"].get("step") for t, m in service.updates.messages
                 if t.endswith("/app-1/update")]
        assert steps[0] == "download" and "stage" in steps and "health" in steps

        moves = flow.read(layout, NAME)["steps"]
        offer_again(service, "app-1")  # offered again: answered from the flow, not redone
        wait_for("the re-offered job's answer", lambda: sum(
            1 for t, m in service.updates.messages
            if t.endswith("/app-1/update") and m["status"] == "SUCCEEDED") == 2, 300)
        assert flow.read(layout, NAME)["steps"] == moves  # never staged twice

        bad = signed(project, color_app, "2.0.0", crash=True)
        service.add_job("app-2", document(folder, base, bad, "2.0.0"))
        done = result(service, "app-2")
        assert done["status"] == "FAILED", done
        details = done["statusDetails"]
        assert details["step"] == "commit" and details["version"] == "1.0.0"
        assert details["reason"].startswith("rolled back to 1.0.0: "), details
        assert "code_node" in details["reason"], details
        status = flow.status(layout, NAME)
        assert (status["state"], status["committed"], status["current"]) == \
            ("rolled-back", "1.0.0", "1.0.0")
        wait_for("the runtime back on 1.0.0", lambda: runtime_at(layout, "1.0.0"), 300)

        moves = flow.read(layout, NAME)["steps"]
        offer_again(service, "app-2")  # the failed job again: its answer, not a second try
        wait_for("the re-offered job's answer", lambda: [
            m for t, m in service.updates.messages
            if t.endswith("/app-2/update") and m["status"] == "FAILED"][1:], 300)
        again = [m for t, m in service.updates.messages
                 if t.endswith("/app-2/update") and m["status"] == "FAILED"][1]
        assert again["statusDetails"]["reason"] == details["reason"]
        assert flow.read(layout, NAME)["steps"] == moves  # 2.0.0 was not staged twice
    finally:
        supervise.stop_supervisor(layout, NAME)
