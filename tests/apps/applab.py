"""A lab fleet ready for application deployments (`fleet app deploy` end to end).

Real parts: the lab's OpenSSH devices, the project's RTSP test server with one
live test-pattern mount per device (``<device>/cam1``), those cameras in the
project's registry (each owned by its device, tagged ``app=face_blur``), a
release key, and the face-blur example with the real CenterFace model built
into a signed bundle. Every device's own ``etc/fleet/apps.json`` shortens the
health gate (HEALTH) so a batch waits seconds, not the 30 s default.

Sizes: ``EDGEFLEET_APP_FLEET`` devices (a multiple of 3; default DEFAULT_SIZE,
the must-show's 30 with ``EDGEFLEET_APP_FLEET=30``). Face blur runs at the
tests' small model input (runtime_sizes.TEST_INPUT) so 30 runtimes fit on a
2-core machine; cameras deliver CAMERA_FPS.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from appkit import PASS  # noqa: E402
from labkit import CALM_HEALTH, keyed_project, run_cli, start_lab  # noqa: E402
from rtsp_server import RtspServer, rtsp_available, start_rtsp_server  # noqa: E402

from fleet.lab import Lab  # noqa: E402

SIZE_ENV = "EDGEFLEET_APP_FLEET"
DEFAULT_SIZE = 3
APP = "face_blur"
CAMERA_FPS = 2
CAMERA_TAG = "tag:app=face_blur"
HEALTH = {"window_s": 3, "min_fps": 0.5, "startup_s": 240, "poll_s": 0.5}
EXAMPLE = TESTS.parent / "runtime/examples/face_blur"
MODEL_DIR = "packages/123456789012-CENTERFACE-1.0"
CODE = "packages/123456789012-FACE_BLUR_CODE-1.0/src/application.py"


def fleet_size() -> int:
    raw = os.environ.get(SIZE_ENV, "")
    size = int(raw) if raw.isdigit() else DEFAULT_SIZE
    return max(3, size - size % 3)


@dataclass
class AppLab:
    lab: Lab
    cameras: RtspServer

    @property
    def root(self) -> Path:
        return self.lab.project.root

    def names(self) -> list[str]:
        return sorted(self.lab.devices())

    def build(self, app: Path, version: str) -> Path:
        res = run_cli(self.root, "app", "build", str(app), "--version", version, env=PASS)
        assert res.exit_code == 0, res.stderr
        return self.root / "apps" / f"{APP}-{version}.app"

    def deploy_argv(self, bundle: Path, *policy: str) -> list[str]:
        return ["app", "deploy", str(bundle), "-i", "lab", "-e", f"camera_node={CAMERA_TAG}",
                *policy, "--json"]


@contextmanager
def app_lab(root: Path, devices: int) -> Iterator[AppLab]:
    """The lab, the cameras and the registry (see the module docstring); all stopped after."""
    if not rtsp_available():
        pytest.skip("gst-rtsp-server missing (tests/rtsp_server.py names the packages)")
    keyed_project(root)
    (root / "fleet.yaml").write_text(CALM_HEALTH)
    names = lab_names(devices)
    with start_rtsp_server(h265=False, patterns=[f"{n}/cam1" for n in names],
                           pattern_fps=CAMERA_FPS) as server:
        lab = start_lab(root, 3, devices // 3)
        try:
            assert sorted(lab.devices()) == sorted(names), lab.devices()
            _register_cameras(lab, server)
            for name in names:
                settings = lab.layout(name).etc / "apps.json"
                settings.write_text(json.dumps({"health": HEALTH}))
            yield AppLab(lab, server)
        finally:
            lab.down()


def lab_names(devices: int) -> list[str]:
    """The names `fleet lab up --sites 3` gives `devices` devices (3 sites, in order)."""
    from fleet.lab.devices import site_name

    return [f"{site_name(s)}-{i:02d}" for s in range(3) for i in range(1, devices // 3 + 1)]


def _register_cameras(lab: Lab, server: RtspServer) -> None:
    res = run_cli(lab.project.root, "devices", "register", "-i", "lab")
    assert res.exit_code == 0, res.stdout + res.stderr
    rows = ["name,device,rtsp_url,username,password,description,tags"]
    for name in sorted(lab.devices()):
        rows.append(f"{name}-cam1,{name},{server.url(f'{name}/cam1')},,,"
                    f"{name}'s door camera,app=face_blur")
    csv = lab.project.root / "cameras.csv"
    csv.write_text("\r\n".join(rows) + "\r\n")
    res = run_cli(lab.project.root, "cameras", "import", str(csv))
    assert res.exit_code == 0, res.stdout + res.stderr


def face_blur(dest: Path) -> Path:
    """The face-blur example with CenterFace in place, at the tests' small model input."""
    from fleet_runtime.pipeline.models import centerface_model
    from runtime_sizes import TEST_INPUT

    app = dest / APP
    shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("__pycache__"))
    (app / MODEL_DIR / "model").mkdir(parents=True, exist_ok=True)
    shutil.copy(centerface_model(), app / MODEL_DIR / "model/centerface.onnx")
    path = app / MODEL_DIR / "descriptor.json"
    descriptor = json.loads(path.read_text())
    descriptor["mlModelDescriptor"]["inputs"][0]["shape"] = [1, 3, TEST_INPUT[1], TEST_INPUT[0]]
    descriptor["mlModelDescriptor"]["onnx"]["preprocess"]["size"] = list(TEST_INPUT)
    path.write_text(json.dumps(descriptor))
    return app


def runtime_health(lab: Lab, name: str) -> dict[str, Any]:
    """The device's supervised runtime's own /health (its port from the supervisor record)."""
    from fleet_runtime.apps import supervise

    record = supervise.read_record(lab.layout(name), APP) or {}
    url = f"http://127.0.0.1:{record['port']}/health"
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - a local URL
        return json.loads(response.read())  # type: ignore[no-any-return]


def camera_fps(lab: Lab, names: list[str], seconds: float = 6.0) -> dict[str, dict[str, float]]:
    """Per device, each camera's frames out per second, measured from /health over one
    window of `seconds` for all devices at once."""
    first, start = {n: runtime_health(lab, n)["cameras"] for n in names}, time.monotonic()
    time.sleep(seconds)  # a measurement window, not a wait for an event
    last = {n: runtime_health(lab, n)["cameras"] for n in names}
    spent = time.monotonic() - start
    return {n: {cam: (c["frames_out"] - first[n].get(cam, {}).get("frames_out", 0)) / spent
                for cam, c in last[n].items()} for n in names}


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 300.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


# ---------------------------------------------------------------------------- controller kills
SEED_ENV = "EDGEFLEET_CRASH_SEED"
KILLS_ENV = "EDGEFLEET_APP_KILLS"
# The device's flow states in which its target version is staged (or further): a stage of
# that version after this would be a second one.
STAGED_OR_LATER = ("staged", "activating", "checking", "committing", "done")


def seed_from_env() -> int:
    raw = os.environ.get(SEED_ENV, "")
    seed = int(raw) if raw.isdigit() else random.SystemRandom().randrange(1, 2**32)
    print(f"\n{SEED_ENV}={seed}  (set it to replay these kill moments)", flush=True)
    return seed


def kill_count() -> int:
    raw = os.environ.get(KILLS_ENV, "")
    return int(raw) if raw.isdigit() else 3


def fleet_process(root: Path, *args: str) -> subprocess.Popen[bytes]:
    """`fleet ARGS` as a process of its own (the one the test SIGKILLs)."""
    return subprocess.Popen([sys.executable, "-m", "fleet.cli.main", "--project", str(root),
                             "--no-color", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "120"})


def app_state(lab: Lab, name: str) -> dict[str, Any]:
    """The device's own view of the app (`fleet_runtime.apps.flow.status`), or absent."""
    from fleet_runtime.apps import flow

    layout = lab.layout(name)
    if not (layout.apps / APP / "app.json").is_file():
        return {"state": "absent", "target": None, "committed": None, "current": None}
    return flow.status(layout, APP)


def staged_steps(journal: Any) -> dict[str, int]:
    """Per device, how many `staged` steps the journal records (every run, every resume)."""
    counts: dict[str, int] = {}
    for event in journal.events():
        if event.get("event") == "device_step" and event.get("step") == "staged":
            counts[event["device"]] = counts.get(event["device"], 0) + 1
    return counts


@dataclass
class Kill:
    """What a kill interrupted: each device's flow state, and which devices were inside their
    `staged` step before the device had staged (a resume then rightly stages again)."""

    delay: float
    states: dict[str, str]
    mid_stage: dict[str, bool]

    @classmethod
    def now(cls, lab: Lab, journal: Any, names: list[str], version: str,
            delay: float) -> Kill:
        last: dict[str, str] = {}
        for event in journal.events():
            if event.get("event") == "device_step":
                last[event["device"]] = event["step"]
        states, mid = {}, {}
        for name in names:
            doc = app_state(lab, name)
            staged = doc["target"] == version and doc["state"] in STAGED_OR_LATER
            states[name] = f"{doc['state']}:{doc['target']}"
            mid[name] = last.get(name) == "staged" and not staged
        return cls(round(delay, 1), states, mid)
