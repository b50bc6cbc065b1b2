"""Kill a real `fleet ota rollout` / `resume` process (SIGKILL) at chosen device states.

A kill point is (device, phase): the controller dies while that device is
``installing`` (the agent still writing the slot), ``activated`` (installed and
marked for its trial boot, not yet rebooting), ``rebooting`` (the lab's detached
reboot under way) or on ``trial`` (booted into the new slot, not committed).
Phases are read on the device itself (its boot.json and the lab's record), a
point counts as *landed* only when the device shows the same phase just before
and just after the kill, and installs are counted in the device's own
agent.log.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from fleet_runtime.layout import read_json

from fleet import processes
from fleet.lab import Lab

SEED_ENV = "EDGEFLEET_CRASH_SEED"
PHASES = ("installing", "activated", "rebooting", "trial")
RANK = {"before": 0, "installing": 1, "installed": 2, "activated": 3, "rebooting": 4,
        "trial": 5, "done": 6}
REPEATABLE = ("activated", "trial")  # a resume walks through these again
WAIT_S = 120.0  # bound on waiting for one device event (a loaded machine is slow, not wrong)


def seed_from_env() -> int:
    raw = os.environ.get(SEED_ENV)
    seed = int(raw) if raw else random.SystemRandom().randrange(1, 2**32)
    print(f"\n{SEED_ENV}={seed}  (set it to replay these kill points)", flush=True)
    return seed


def crash_recipe(lab: Lab, version: str = "1.1.0") -> Path:
    """The lab image with a post-install hook that takes a moment, so `installing` (the
    slot written, the install not yet recorded) is a window a kill can land in."""
    text = (lab.project.firmware / "lab-1.1.0.yaml").read_text()
    text = text.replace("version: 1.1.0", f"version: {version}")
    text = text.replace("generate:\n", 'generate:\n  opt/edgefleet/bin/post-install: '
                        '"#!/bin/sh\\nsleep 0.5\\n"\n')
    text = text.replace("hooks:\n", "hooks:\n  post-install: opt/edgefleet/bin/post-install\n")
    recipe = lab.project.firmware / f"crash-{version}.yaml"
    recipe.write_text(text)
    return recipe


def plan_points(rng: random.Random, devices: list[str], count: int | None
                ) -> list[tuple[str, str]]:
    """`count` kill points in rollout order, drawn from every (device, phase) slot; the
    phases a resume walks again may be drawn twice for the same device. `count=None`:
    one point per phase, each on a device drawn at random (the short run)."""
    if count is None:
        chosen = [(rng.choice(devices), p, 0) for p in PHASES]
    else:
        slots = [(d, p, n) for d in devices for p in PHASES
                 for n in range(2 if p in REPEATABLE else 1)]
        chosen = rng.sample(slots, min(count, len(slots)))
    chosen.sort(key=lambda s: (devices.index(s[0]), RANK[s[1]], s[2]))
    return [(d, p) for d, p, _ in chosen]


def phase(lab: Lab, name: str, target: str) -> str:
    """Where the device is, read on the device (boot.json) and in the lab's record."""
    if lab.device(name).rebooting is not None:
        return "rebooting"
    doc = read_json(lab.layout(name).boot_json, default={}) or {}
    state = doc.get("state", "idle")
    if state != "idle":
        return str(state)
    active = (doc.get("slots") or {}).get(doc.get("active", "a")) or {}
    return "done" if active.get("version") == target else "before"


def installs(lab: Lab, name: str) -> int:
    """`install ok` lines in the device's own agent.log: what the device really installed."""
    log = lab.layout(name).logs / "agent.log"
    return sum(1 for line in log.read_text().splitlines() if " install ok " in line) \
        if log.exists() else 0


def leftovers(lab: Lab) -> list[str]:
    """Processes of this lab still alive (after `down`): by command line and by its mark."""
    marker = str(lab.dir)
    pids = {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
            and marker in processes.cmdline(int(p.name)) and processes.alive(int(p.name))}
    return sorted(processes.cmdline(pid) for pid in pids | set(lab.strays()))


def fleet(project: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "fleet.cli.main", "--project", str(project),
                             "--no-color", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "120"})


@dataclass
class Trial:
    """One rollout killed at `points`, each kill followed by `fleet ota resume`."""

    lab: Lab
    target: str
    points: list[tuple[str, str]]
    rng: random.Random
    landed: list[tuple[str, str]] = field(default_factory=list)
    missed: list[tuple[str, str, str]] = field(default_factory=list)

    def run(self, proc: subprocess.Popen[bytes], rollout_id: str) -> subprocess.Popen[bytes]:
        for number, (device, want) in enumerate(self.points, start=1):
            if not self._wait_for(proc, device, want):
                continue
            time.sleep(self.rng.uniform(0.0, 0.08))  # somewhere inside the phase, seeded
            before = phase(self.lab, device, self.target)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            after = phase(self.lab, device, self.target)
            if before == after == want:
                self.landed.append((device, want))
            else:
                self.missed.append((device, want, f"{before} -> {after}"))
            print(f"kill {number:3d}: {device} {want:<10} saw {before} -> {after}", flush=True)
            proc = fleet(self.lab.project.root, "ota", "resume", rollout_id)
        return proc

    def _wait_for(self, proc: subprocess.Popen[bytes], device: str, want: str) -> bool:
        """Until the device is in `want`; False once it is past it (or the run ended)."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            now = phase(self.lab, device, self.target)
            if now == want:
                return True
            if RANK[now] > RANK[want] or proc.poll() is not None:
                self.missed.append((device, want, f"already {now}"))
                return False
            time.sleep(0.005)
        raise AssertionError(f"{device} never reached {want} within {WAIT_S:g}s")

    def summary(self) -> str:
        landed = Counter(p for _, p in self.landed)
        return (f"{len(self.landed)} of {len(self.points)} kill points landed "
                f"({', '.join(f'{p}: {landed[p]}' for p in PHASES)}); missed: {self.missed}")
