"""Helpers for the deployment tests: bundles of the colour app, a camera-binding configure,
the engine as the CLI calls it, and what each device reports."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

from lab_rollouts import SECRET

from fleet import inventory as inv
from fleet.agent import Agent, local_agent
from fleet.apps import build as builder
from fleet.apps.prestage import PreStage
from fleet.apps.work import AppWork, GraphDefaults
from fleet.lab import Lab
from fleet.rollout import engine
from fleet.rollout.policy import Policy
from fleet.rollout.report import Report

NAME = "color_classifier"
CODE = "packages/123456789012-COLOR_CODE-1.0/src/application.py"
# Short windows for a test (a frame in 2 s, even on a loaded machine); the defaults are
# 30 s held at 1 fps, 120 s to start.
HEALTH = {"window_s": 2, "startup_s": 90, "min_fps": 0.5, "poll_s": 0.5}


def bundle(lab: Lab, app: Path, version: str, *, code: str | None = None,
           extra: dict[str, bytes] | None = None, name: str = NAME) -> Path:
    """The app at `version`; `code` replaces application.py's text, `extra` adds files,
    `name` is another application (its graph folder renamed)."""
    src = lab.project.root / "apps-src" / f"{name}-{version}"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(app, src)
    if name != NAME:
        (src / "graphs" / NAME).rename(src / "graphs" / name)
    if code is not None:
        (src / CODE).write_text(code)
    for rel, data in (extra or {}).items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    return builder.build(lab.project, src, passphrase=SECRET.encode(), version=version).path


def crashing_code(app: Path) -> str:
    """application.py raising on every frame: a bug that ships."""
    return (app / CODE).read_text().replace(
        "        streams = self.inputs.video_in.get()\n",
        "        raise RuntimeError('this release broke process_streams')\n")


class Camera(GraphDefaults):
    """Binds the graph's camera node to the test server (what A2's configure does from the
    registry)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def cameras(self) -> dict[str, list[str]]:
        return {"camera_node": [self.url]}


class Steps:
    """The progress callback: every (step, fields) per device, and the bytes sent."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[str, list[tuple[str, dict[str, Any]]]] = {}

    def __call__(self, device: str, step: str, fields: dict[str, Any]) -> None:
        with self.lock:
            self.seen.setdefault(device, []).append((step, dict(fields)))

    def sent(self, device: str) -> int:
        done = [f["done"] for s, f in self.seen.get(device, []) if s == "sending" and "done" in f]
        return done[-1] if done else 0


def work(lab: Lab, path: Path, camera: str, steps: Steps | None = None) -> AppWork:
    return AppWork.for_bundle(lab.project, path, health=HEALTH,
                              configure=lambda *_: Camera(camera), progress=steps)


def deploy(lab: Lab, w: AppWork, policy: Policy, limit: str | None = None,
           sinks: list[Any] | None = None, prestage: bool = False) -> Report:
    """A rollout of `w`; `prestage`: with the early send `fleet app deploy` uses."""
    sel = inv.Selection.of("lab", limit=limit)
    nr = inv.select(lab.project, sel, num_workers=policy.concurrency)
    sinks = list(sinks or [])
    if prestage:
        w.prestage = PreStage(w, nr, policy.concurrency)
        sinks.append(w.prestage)
    return engine.start(lab.project, nr, w, policy, selection={"inventory": "lab"},
                        sinks=sinks)


def plan(lab: Lab, w: AppWork, limit: str | None = None) -> dict[str, dict[str, Any]]:
    nr = inv.select(lab.project, inv.Selection.of("lab", limit=limit))
    rows = {n: r[0].result for n, r in nr.run(task=w.decide).items()}
    nr.close_connections(on_failed=True)
    return rows


def agent(lab: Lab, device: str) -> Agent:
    return local_agent(lab.root(device))


def app_on(lab: Lab, device: str) -> dict[str, Any] | None:
    """The app as the device lists it (None: not there)."""
    found = agent(lab, device).app_list().get(NAME)
    return None if found is None else found.__dict__


def outcomes(report: Report) -> dict[str, str]:
    return {n: d.outcome for n, d in report.devices.items()}
