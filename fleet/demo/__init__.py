"""`fleet demo`: the whole story on a local lab fleet, step by step.

Each capability contributes one step: a function ``step(demo: Demo) -> None``
listed in STEPS in story order. Steps drive the real `fleet` CLI (a
subprocess per command, exactly what a person would type) so the demo shows
what users see, and fail loudly if any command fails.
"""

from __future__ import annotations

import importlib
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fleet.errors import FleetError

# (title, "module:function"), in story order. Later capabilities add theirs.
STEPS: tuple[tuple[str, str], ...] = (
    ("Bring up a lab fleet: 3 sites x 3 devices", "fleet.demo.lab:step_lab"),
    ("Fleet health", "fleet.demo.lab:step_health"),
    ("Signed OTA update with automatic rollback", "fleet.demo.ota:step_ota"),
    ("Rolling update across 3 sites: canary, 10%, the rest; a rollback counted", "fleet.demo.rollout:step_rollout"),
    ("Register devices and import cameras from CSV", "fleet.demo.cameras:step_registry"),
    ("A new site from the factory: fleet CA, USB archives, first boot, online", "fleet.demo.provisioning:step_provisioning"),
    ("Vision runtime: face blur on ONNX Runtime, metrics and health", "fleet.demo.runtime:step_face_blur"),
    ("The face-blur application as a signed bundle; a tampered copy refused", "fleet.demo.apps:step_app_bundle"),
    ("Face blur across a site: canary first, cameras from the registry; a broken release rolled back", "fleet.demo.app_fleet:step_app_fleet"),
    ("Heartbeats over MQTT, health from them, and a log export", "fleet.demo.logs:step_heartbeats_and_logs"),
    ("The web console: an operator, and its JSON API", "fleet.demo.console:step_console"),
)


@dataclass
class Demo:
    project: Path
    say: Callable[[str], None]
    fast: bool = False

    def fleet(self, *args: str, check: bool = True, json_out: bool = False) -> subprocess.CompletedProcess[str]:
        """Run `fleet ARGS` against the demo project, echoing the command line."""
        argv = [sys.executable, "-m", "fleet.cli.main", "--project", str(self.project), *args]
        self.say(f"[bold cyan]$ fleet {shlex.join(args)}[/bold cyan]")
        env = {**os.environ, "COLUMNS": os.environ.get("COLUMNS", "110")}
        proc = subprocess.run(
            argv, text=True, env=env, cwd=self.project,
            stdout=subprocess.PIPE if json_out else None,
        )
        if check and proc.returncode != 0:
            raise FleetError(f"demo step failed: fleet {shlex.join(args)} exited {proc.returncode}")
        return proc


MARKER = ".edgefleet-demo"
TEMPLATE_PARTS = ("firmware", "inventories/example")


def prepare_project(source: Path, target: Path) -> Path:
    """A fresh demo project at `target`, seeded from the template parts of `source`.

    The demo never runs in the operator's own project: it makes CAs, keys and
    a registry, and starts from scratch each time. A `target` that exists must
    carry our marker, or it is refused rather than deleted.
    """
    if target.exists():
        if not (target / MARKER).exists():
            raise FleetError(f"{target} exists and is not an edgefleet demo project",
                             fix="pass another --dir, or remove it yourself")
        stop_lab(target)
        shutil.rmtree(target)
    target.mkdir(parents=True)
    (target / MARKER).write_text("created by `fleet demo`; deleted by the next one\n")
    for part in TEMPLATE_PARTS:
        if (source / part).exists():
            shutil.copytree(source / part, target / part, symlinks=False)
    return target


def stop_lab(project_dir: Path) -> None:
    """Stop what an earlier demo's lab left running (SSH servers, broker, daemons)."""
    subprocess.run([sys.executable, "-m", "fleet.cli.main", "--project", str(project_dir),
                    "lab", "down"], capture_output=True, check=False)


def resolve(ref: str) -> Callable[[Demo], None]:
    module, _, func = ref.partition(":")
    return getattr(importlib.import_module(module), func)  # type: ignore[no-any-return]


def run(demo: Demo, only: list[str] | None = None) -> None:
    for number, (title, ref) in enumerate(STEPS, start=1):
        if only and not any(word.lower() in title.lower() for word in only):
            continue
        demo.say(f"\n[bold]── Step {number}/{len(STEPS)}: {title}[/bold]")
        resolve(ref)(demo)
