"""Power loss: the real `fleet-agent` process is SIGKILLed in every step of the update flow.

Each step of the flow table (install, activate, the trial boot, commit, rollback,
the fallback boot) runs as a `fleet-agent` subprocess against a device root
(FLEET_ROOT) and is cut in two ways:

* precise: at the Nth crash point the step crosses (``FLEET_AGENT_CRASH_AT=N``);
* timed: the agent stops itself at the step's first crash point
  (``FLEET_AGENT_PAUSE=1``, so the step has begun), is continued, and is killed a
  fraction of the step's duration later. A kill counts only when it landed inside
  the step: the agent died by the signal without answering. One that came too late
  is tried again with half the delay, down to a kill at the pause point itself.

After each cut a copy of the device boots (it must come up on a valid, intact slot)
and the interrupted step is re-run, then the rest of the flow: it must end idle on
the expected version. Which cuts run comes from a seed: ``EDGEFLEET_CRASH_SEED``,
else a random one; it is printed, and named in every failure. A bigger run:
``EDGEFLEET_CRASH_TRIALS=N`` (N timed kills per step instead of one); see
docs/testing.md, "Power-loss tests".
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from fleet_runtime import slots
from fleet_runtime.agent import cli
from fleet_runtime.layout import Layout

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures_bundle import default_files, make_bundle, make_device, new_key  # noqa: E402

KEY = new_key()
AGENT = str(Path(sys.executable).parent / "fleet-agent")
SEED_ENV, TRIALS_ENV = "EDGEFLEET_CRASH_SEED", "EDGEFLEET_CRASH_TRIALS"
MAX_HALVINGS = 8
FILES = {f"opt/edgefleet/lib/part{i}.bin": bytes([i]) * (40 << 10) for i in range(5)}
FILES["opt/edgefleet/models/big.onnx"] = os.urandom(1 << 20) + b"tail"


@dataclass(frozen=True)
class Step:
    """One verb of the flow, cut while it runs; `before` brings a fresh device to its start."""

    name: str
    argv: tuple[str, ...]
    before: tuple[str, ...]
    target: str  # the version the flow ends on once the step is re-run and finished


UPDATE = ("install", "activate", "boot", "commit")
STEPS = {s.name: s for s in (
    Step("install", ("install", "{bundle}"), (), "1.1.0"),
    Step("activate", ("activate",), ("install",), "1.1.0"),
    Step("boot", ("boot",), ("install", "activate"), "1.1.0"),  # activated -> trial
    Step("commit", ("commit",), ("install", "activate", "boot"), "1.1.0"),
    Step("rollback", ("rollback",), ("install", "activate", "boot"), "1.0.0"),
    Step("fallback", ("boot",), ("install", "activate-once", "boot"), "1.0.0"),  # no trials left
)}


@dataclass(frozen=True)
class Cut:
    step: str
    point: int = 0  # precise: the crash point's number (from 1)
    fraction: float = 0.0  # timed: of the step's duration, after it began

    def __str__(self) -> str:
        at = f"point {self.point}" if self.point else f"{self.fraction:.3f} of its duration"
        return f"{self.step} at {at}"


def plan_cuts(seed: int, points: dict[str, int], trials: int | None) -> list[Cut]:
    """The cuts for `seed`: pure, so the printed seed replays the same ones.

    Every crash point of every step (a few dozen: cheap, and a sample missed the one
    between recording a slot and renaming it into place), in an order drawn from the
    seed, and timed kills at fractions drawn from it: one per step, or `trials`.
    """
    rng = random.Random(seed)
    cuts = []
    for name in STEPS:
        cuts += [Cut(name, point=p) for p in range(1, points[name] + 1)]
        cuts += [Cut(name, fraction=rng.random()) for _ in range(trials or 1)]
    rng.shuffle(cuts)
    return cuts


def run_seed() -> int:
    raw = os.environ.get(SEED_ENV)
    return int(raw) if raw else random.SystemRandom().randrange(1, 10**9)


def run_trials() -> int | None:
    raw = os.environ.get(TRIALS_ENV)
    return int(raw) if raw else None


# ---------------------------------------------------------------------------- the device


@pytest.fixture(scope="module")
def update_bundle(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("power") / "update.bundle"
    path.write_bytes(make_bundle(KEY, dict(FILES, **default_files("1.1.0"))))
    return path


def run_in_process(layout: Layout, verb: str, bundle_path: Path) -> None:
    """A step run here, not cut: to prepare a device, count points, or finish a flow."""
    if verb == "install":
        with open(bundle_path, "rb") as fh:
            slots.install(layout, fh)
    elif verb.startswith("activate"):
        slots.activate(layout, trials=1 if verb == "activate-once" else slots.DEFAULT_TRIALS)
    else:
        {"boot": slots.boot, "commit": slots.commit, "rollback": slots.rollback}[verb](layout)


def prepare(root: Path, step: Step, bundle_path: Path) -> Layout:
    layout = make_device(root, KEY)
    for verb in step.before:
        run_in_process(layout, verb, bundle_path)
    return layout


def count_points(root: Path, step: Step, bundle_path: Path) -> int:
    """Crash points the step crosses: the agent's own command, run here (the slot verb and
    the update flow around it), so the subprocess crosses as many."""
    layout = prepare(root, step, bundle_path)
    os.environ[slots.CRASH_ENV] = str(10**9)
    try:
        slots._crossings.clear()
        args = cli.build_parser().parse_args([a.format(bundle=bundle_path) for a in step.argv])
        args.handler(args, layout)
        return slots.crossings()
    finally:
        del os.environ[slots.CRASH_ENV]
        slots._crossings.clear()


def start_agent(layout: Layout, step: Step, bundle_path: Path, **env: str) -> subprocess.Popen:
    argv = [a.format(bundle=bundle_path) for a in step.argv]
    return subprocess.Popen([AGENT, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "FLEET_ROOT": str(layout.root), **env})


def died_inside(proc: subprocess.Popen) -> bool:
    """Killed by the signal before it answered: the cut landed inside the step."""
    out, _err = proc.communicate(timeout=120)
    return proc.returncode == -signal.SIGKILL and not out.strip()


def wait_paused(proc: subprocess.Popen) -> None:
    """Block until the agent stops itself at the step's first crash point."""
    _pid, status = os.waitpid(proc.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), f"the agent ended before its first crash point ({status})"


def timed_kill(layout: Layout, step: Step, bundle_path: Path, delay_s: float | None) -> bool:
    """Start the step, wait until it has begun, let it run `delay_s` (None: not at all), kill."""
    proc = start_agent(layout, step, bundle_path, **{slots.PAUSE_ENV: "1"})
    wait_paused(proc)
    if delay_s is not None:
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(delay_s)  # the cut's instant, drawn from the seed: not a wait for an event
    os.kill(proc.pid, signal.SIGKILL)
    return died_inside(proc)


def step_duration(root: Path, step: Step, bundle_path: Path) -> float:
    """Seconds from the step's first crash point to the agent's exit, on this machine now."""
    layout = prepare(root, step, bundle_path)
    proc = start_agent(layout, step, bundle_path, **{slots.PAUSE_ENV: "1"})
    wait_paused(proc)
    started = time.perf_counter()
    os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, (out, err)
    return time.perf_counter() - started


# ---------------------------------------------------------------------------- after the cut


def assert_boots_valid(layout: Layout, sim_root: Path) -> None:
    """Boot a copy of the device after the power cut: valid slot, consistent, intact."""
    shutil.copytree(layout.root, sim_root, symlinks=True)
    sim = Layout(sim_root)
    booted = slots.boot(sim)
    assert slots.problems(sim) == [], slots.read_state(sim)
    assert slots.verify_slot(sim, booted["slot"]) == []
    for slot, record in slots.read_state(sim)["slots"].items():  # what it claims is intact
        if (record or {}).get("manifest_sha256") and record["status"] != "failed":
            manifest = slots.slot_manifest(sim, slot)
            assert manifest and manifest.digest == record["manifest_sha256"], (slot, record)
            assert slots.verify_slot(sim, slot) == [], (slot, record)
    assert booted["version"] in {"1.0.0", "1.1.0"}
    assert not list(sim.slots.glob(".staging-*")) and not list(sim.slots.glob(".trash-*"))
    shutil.rmtree(sim_root)


def finish(layout: Layout, step: Step, bundle_path: Path) -> None:
    """Re-run the interrupted step, then the rest of the flow: it must end idle on target."""
    run_in_process(layout, step.argv[0], bundle_path)
    state = slots.read_state(layout)["state"]
    rest = {"installing": UPDATE, "installed": UPDATE[1:], "activated": UPDATE[2:],
            "trial": UPDATE[3:], "idle": ()}[state]
    if state == "idle" and slots.software_version(layout) != step.target:
        rest = UPDATE  # a cut install that the boot discarded: install again
    for verb in rest:
        run_in_process(layout, verb, bundle_path)
    assert slots.software_version(layout) == step.target
    assert slots.read_state(layout)["state"] == "idle" and slots.problems(layout) == []
    assert slots.verify_slot(layout, slots.active_slot(layout)) == []


# ---------------------------------------------------------------------------- the tests

FAULT_TABLE = [
    # (step, crash point) -> (state after the power cut and one boot, running version)
    ("install", "after-persist:1", "idle", "1.0.0"),       # `installing` persisted
    ("install", "write:3", "idle", "1.0.0"),               # mid-payload
    ("install", "after-slot-rename", "idle", "1.0.0"),     # image in place, not yet recorded
    ("install", "after-persist:2", "installed", "1.0.0"),  # `installed` persisted
    ("activate", "before-persist", "installed", "1.0.0"),
    ("activate", "after-persist", "trial", "1.1.0"),
    ("boot", "before-persist", "trial", "1.1.0"),          # the real boot after that picks b
    ("boot", "after-persist", "trial", "1.1.0"),
    ("commit", "before-persist", "trial", "1.1.0"),
    ("commit", "after-persist", "idle", "1.1.0"),
    ("rollback", "before-persist", "trial", "1.1.0"),      # still on trial, one boot fewer
    ("rollback", "after-persist", "idle", "1.0.0"),
    ("fallback", "before-persist", "idle", "1.0.0"),       # the next boot falls back anyway
    ("fallback", "after-persist", "idle", "1.0.0"),
]


@pytest.mark.parametrize("name,point,state,version", FAULT_TABLE)
def test_killed_in_state(tmp_path, update_bundle, name, point, state, version):
    step = STEPS[name]
    layout = prepare(tmp_path / "dev", step, update_bundle)
    proc = start_agent(layout, step, update_bundle, **{slots.CRASH_ENV: point})
    assert died_inside(proc)
    slots.boot(layout)
    assert (slots.read_state(layout)["state"], slots.software_version(layout)) == (state, version)
    assert slots.problems(layout) == []
    if name == "activate" and state == "trial":
        step = STEPS["boot"]  # the boot above already was the trial boot the step armed
    finish(layout, step, update_bundle)


def test_the_cuts_are_the_same_for_a_seed_and_cover_every_step():
    points = {"install": 15, "activate": 2, "boot": 2, "commit": 2, "rollback": 2, "fallback": 2}
    assert plan_cuts(7, points, None) == plan_cuts(7, points, None)
    assert plan_cuts(7, points, None) != plan_cuts(8, points, None)
    for trials in (None, 3):
        cuts = plan_cuts(7, points, trials)
        for name, n in points.items():
            precise = sorted(c.point for c in cuts if c.step == name and c.point)
            timed = [c for c in cuts if c.step == name and not c.point]
            assert precise == list(range(1, n + 1)) and len(timed) == (trials or 1)


def cut_once(cut: Cut, root: Path, bundle_path: Path, durations: dict[str, float]) -> int:
    """Run one cut on a fresh device, check the aftermath; the kills it took to land."""
    step = STEPS[cut.step]
    attempts, landed = 0, False
    delay: float | None = cut.fraction * durations[cut.step]
    while not landed:
        shutil.rmtree(root, ignore_errors=True)
        layout = prepare(root, step, bundle_path)
        attempts += 1
        if cut.point:
            landed = died_inside(start_agent(layout, step, bundle_path,
                                             **{slots.CRASH_ENV: str(cut.point)}))
            assert landed, "the agent crossed fewer crash points than counted"
        else:
            landed = timed_kill(layout, step, bundle_path, delay)
            # Too late (the step had answered): half the delay, at last none at all.
            delay = None if attempts >= MAX_HALVINGS else (delay or 0.0) / 2
    assert_boots_valid(layout, root.with_name(root.name + "-sim"))
    finish(layout, step, bundle_path)
    shutil.rmtree(root)
    return attempts


def test_power_cuts_from_a_seed(tmp_path, update_bundle):
    seed, trials = run_seed(), run_trials()
    print(f"\npower-loss seed: {SEED_ENV}={seed} ({TRIALS_ENV}={trials or 'unset: CI size'})")
    points = {n: count_points(tmp_path / f"count-{n}", s, update_bundle) for n, s in STEPS.items()}
    durations = {n: step_duration(tmp_path / f"time-{n}", s, update_bundle)
                 for n, s in STEPS.items()}
    cuts = plan_cuts(seed, points, trials)
    attempts = 0
    for i, cut in enumerate(cuts):
        try:
            attempts += cut_once(cut, tmp_path / f"cut{i}", update_bundle, durations)
        except AssertionError as exc:
            pytest.fail(f"cut {i} ({cut}): {exc}\nreproduce with {SEED_ENV}={seed}"
                        + (f" {TRIALS_ENV}={trials}" if trials else ""))
    print(f"{len(cuts)} cuts landed inside their step ({attempts} kills), points {points}")
