"""Demo step: the face-blur application deployed to a lab site, canary first, cameras bound from
the registry; then a broken release rolled back on its canary by the device, the rollout stopped.

One site (3 devices) keeps the step short: the canary (berlin-01, tagged
``canary`` by the lab), then the rest. Each device gets its own door camera,
registered to it in the registry with a password; the password reaches the
device sealed (its 0600 cameras.json) and appears in no output. The lab
devices hold their health gate for GATE_S seconds (their etc/fleet/apps.json;
30 s by default). At the end the application is removed again, so later
steps run on a quiet machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from fleet.demo import Demo
from fleet.errors import FleetError
from fleet.firmware import PASSPHRASE_ENV

SITE = "berlin"
APP = "face_blur"
GATE_S = 3
CODE = "packages/123456789012-FACE_BLUR_CODE-1.0/src/application.py"
PLAN = ["-i", "lab", "--site", SITE, "--batches", "1,100%", "--canary-tag", "canary",
        "-e", f"camera_node=tag:app={APP}"]
POLICY = [*PLAN, "--max-fail-percentage", "0"]


def step_app_fleet(demo: Demo) -> None:
    from fleet.demo import camserver

    why = camserver.missing()
    if why:
        demo.say(f"[yellow]skipped: {why}[/yellow]")
        return
    os.environ.setdefault(PASSPHRASE_ENV, "edgefleet-demo-only")
    if not list((demo.project / "certs/release").glob("*.pub")):  # run alone (--only)
        demo.fleet("firmware", "keygen", "--install-lab")
    devices = _site_devices(demo.project)
    password = os.environ.setdefault("LAB_CAMERA_PASSWORD", secrets.token_urlsafe(12))
    with camserver.camera_server([f"{d}/door" for d in devices], "viewer", password) as port:
        _register_cameras(demo, devices, port)
        _short_gate(demo.project, devices)
        good, broken = _bundles(demo)
        _deploy(demo, good, broken)
        demo.say("Removal is explicit (deploying one application never removes another):")
        demo.fleet("app", "remove", APP, "-i", "lab", "--site", SITE)


def _site_devices(project: Path) -> list[str]:
    from fleet.lab import Lab
    from fleet.project import Project

    return sorted(n for n, d in Lab(Project.locate(project)).devices().items() if d.site == SITE)


def _register_cameras(demo: Demo, devices: list[str], port: int) -> None:
    demo.say(f"Each {SITE} device gets its own door camera in the registry, tagged for the "
             "application; its password comes from $LAB_CAMERA_PASSWORD (never in the file):")
    rows = ["name,device,rtsp_url,username,password,description,tags"]
    rows += [f"{d}-door,{d},rtsp://127.0.0.1:{port}/{d}/door,viewer,"
             f"password_env:LAB_CAMERA_PASSWORD,door camera of {d},app={APP}" for d in devices]
    if not _registered(demo.project, devices):  # run alone (--only): register them first
        demo.fleet("devices", "register", "-i", "lab")
    csv = demo.project / ".fleet" / "demo-door-cameras.csv"
    csv.write_text("\r\n".join(rows) + "\r\n", encoding="utf-8")
    demo.fleet("cameras", "import", str(csv), "--on-conflict", "update")


def _registered(project: Path, devices: list[str]) -> bool:
    from fleet.project import Project
    from fleet.registry import open_registry

    with open_registry(Project.locate(project)) as registry:
        known = {d["name"] for d in registry.list_devices(names=devices)}
    return set(devices) <= known


def _short_gate(project: Path, devices: list[str]) -> None:
    import json

    from fleet.lab import Lab
    from fleet.project import Project

    lab = Lab(Project.locate(project))
    for name in devices:
        (lab.layout(name).etc / "apps.json").write_text(
            json.dumps({"health": {"window_s": GATE_S, "min_fps": 0.5}}))


def _bundles(demo: Demo) -> tuple[str, str]:
    """face_blur 1.0.0 (built by the bundle step, or here), and 1.1.0 whose code crashes."""
    from fleet.demo.runtime import _prepare

    work = demo.project / ".fleet" / "demo-runtime"
    work.mkdir(parents=True, exist_ok=True)
    app, _ = _prepare(work)
    good = demo.project / "apps" / f"{APP}-1.0.0.app"
    if not good.exists():
        demo.fleet("app", "build", str(app), "--version", "1.0.0")
    broken = work / "broken" / APP
    shutil.rmtree(broken.parent, ignore_errors=True)
    shutil.copytree(app, broken)
    code = broken / CODE
    text = code.read_text()
    marker = "    def process_streams(self):\n"
    if marker not in text:
        raise FleetError(f"demo: {CODE} has no process_streams to break")
    code.write_text(text.replace(marker, marker + "        raise RuntimeError('1.1.0 broke "
                                 "process_streams')\n", 1))
    demo.fleet("app", "build", str(broken), "--version", "1.1.0")
    return str(good.relative_to(demo.project)), f"apps/{APP}-1.1.0.app"


def _deploy(demo: Demo, good: str, broken: str) -> None:
    demo.say("`plan` shows each device's decision before a byte moves: version, bytes to send "
             "after deduplication, free disk after, the cameras it binds:")
    demo.fleet("app", "plan", good, *PLAN)
    demo.say(f"Deploy: the canary first, then the rest of {SITE}; each device switches, holds "
             f"its health gate ({GATE_S} s here: runtime up, every camera at its fps) and "
             "commits by itself.")
    demo.fleet("app", "deploy", good, *POLICY)
    demo.say("1.1.0 crashes on every frame. The canary's device sees its runtime crash-loop, "
             "rolls back to 1.0.0 by itself, and the rollout stops there (max_fail_percentage "
             "0): the other devices never leave 1.0.0. (This command exits 1 on purpose.)")
    result = demo.fleet("app", "deploy", broken, *POLICY, check=False)
    if result.returncode != 1:
        raise FleetError(f"demo: the broken release was not stopped (exit {result.returncode})")
    demo.say("Health shows each device's applications: the canary back on 1.0.0 (rolled back, "
             "with the reason), the others still on 1.0.0, every camera's fps:")
    demo.fleet("health", "-i", "lab", "--site", SITE, check=False)
