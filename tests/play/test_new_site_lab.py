"""The must-show: `fleet play playbooks/new-site.yaml` takes a factory lab site from
unprovisioned to running the face-blur application on its cameras, in one command.

The only step outside the play is the physical one: a technician plugs the site's
drive into each box (here a thread that boots each lab box from the drive once its
archive is on it, as `fleet lab usb` does).
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_runtime import provisioning as fmt
from labkit import CALM_HEALTH, default_ssh_kind, require_ssh, run_cli

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
from rtsp_server import rtsp_available, start_rtsp_server  # noqa: E402

from fleet import firmware, pki  # noqa: E402
from fleet.agent import local_agent  # noqa: E402
from fleet.lab import Lab  # noqa: E402
from fleet.lab.usb import lab_usb_boot  # noqa: E402
from fleet.project import Project  # noqa: E402

REPO = TESTS.parent
CA_PASS, RELEASE_PASS = "site-ca-passphrase", "site-release-passphrase"
FACE_BLUR = REPO / "runtime/examples/face_blur"
MODEL_REL = "packages/123456789012-CENTERFACE-1.0/model/centerface.onnx"
DEVICES = ["berlin-01", "berlin-02"]
GATE = {"window_s": 2, "min_fps": 0.2, "poll_s": 0.5}


@pytest.fixture
def factory_site(tmp_path: Path) -> Iterator[Lab]:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("cv2")
    (tmp_path / "fleet.yaml").write_text(CALM_HEALTH)
    project = Project.locate(tmp_path)
    pki.init_ca(project, org="Acme", key_type="ec-p256", passphrase=CA_PASS.encode())
    firmware.keygen(project, passphrase=RELEASE_PASS.encode())  # before `lab up`: trusted
    ssh = default_ssh_kind()
    require_ssh(ssh)
    lab = Lab(project)
    lab.up(1, len(DEVICES), ssh=ssh, factory=True)
    yield lab
    for name in DEVICES:  # the runtimes the deploy started, by their recorded PIDs
        local_agent(lab.root(name)).answer("app", "remove", "face_blur")
    lab.down()


def face_blur_bundle(project: Project) -> Path:
    from fleet_runtime.pipeline.models import centerface_model

    from fleet.apps import build

    src = project.root / "apps-src" / "face_blur"
    shutil.copytree(FACE_BLUR, src, ignore=shutil.ignore_patterns("__pycache__", "README.md"))
    (src / MODEL_REL).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(centerface_model(), src / MODEL_REL)
    return build.build(project, src, passphrase=RELEASE_PASS.encode(), version="1.0.0").path


def cameras_csv(project: Project, port: int) -> Path:
    rows = ["name,device,rtsp_url,username,password,description,tags"]
    rows += [f"{d}-cam1,{d},rtsp://127.0.0.1:{port}/{d}/cam1,,,front door of {d},app=face_blur"
             for d in DEVICES]
    path = project.root / "cameras" / "berlin.csv"
    path.parent.mkdir()
    path.write_text("\n".join(rows) + "\n")
    return path


class Technician(threading.Thread):
    """Plugs the drive into each box once the play has put the box's archive on it."""

    def __init__(self, lab: Lab, drive: Path) -> None:
        super().__init__(daemon=True)
        self.lab, self.drive, self.stop = lab, drive, threading.Event()
        self.booted: list[str] = []
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.wait(0.2) and len(self.booted) < len(DEVICES):
            for name in DEVICES:
                if name not in self.booted and (self.drive / fmt.archive_name(name)).exists():
                    try:
                        lab_usb_boot(self.lab, name, self.drive)
                    except Exception as exc:  # noqa: BLE001 - reported by the test below
                        self.errors.append(f"{name}: {exc}")
                    self.booted.append(name)


def test_new_site_playbook_takes_a_factory_site_to_face_blur_on_its_cameras(factory_site,
                                                                            tmp_path):
    if not rtsp_available():
        pytest.skip("gst-rtsp-server missing")
    lab, project = factory_site, factory_site.project
    bundle = face_blur_bundle(project)
    drive = tmp_path / "drive"
    drive.mkdir()
    extra = tmp_path / "site.yaml"
    with start_rtsp_server(patterns=[f"{d}/cam1" for d in DEVICES], pattern_fps=1) as server:
        csv = cameras_csv(project, server.port)
        extra.write_text(json.dumps({"drive": str(drive), "drive_force": True,
                                     "cameras_csv": str(csv), "app_bundle": str(bundle),
                                     "app_gate": GATE}))
        technician = Technician(lab, drive)
        technician.start()
        try:
            res = run_cli(project.root, "play", str(REPO / "playbooks/new-site.yaml"),
                          "-i", "lab", "--site", "berlin", "-e", f"@{extra}", "--json",
                          env={pki.PASSPHRASE_ENV: CA_PASS})
        finally:
            technician.stop.set()
            technician.join(timeout=60)
        assert not technician.errors, technician.errors
        assert res.exit_code == 0, res.stdout[-3000:] + res.stderr[-3000:]
        for name in DEVICES:
            app = local_agent(lab.root(name)).app_list().get("face_blur")
            assert app is not None and app.state == "done" and app.committed == "1.0.0", app
            report = local_agent(lab.root(name)).health().answer
            check = next(c for c in report["checks"] if c["name"] == "app:face_blur")
            assert check["status"] == "ok", check
    assert CA_PASS not in res.stdout and CA_PASS not in res.stderr
