"""Power loss: the real `fleet-agent` process is SIGKILLed in every step of the update flow.

Each step of the flow table (install, activate, the trial boot, commit, rollback,
the fallback boot) runs as a `fleet-agent` subprocess against a device root
(FLEET_ROOT), once per slot backend: `directories` (boot.json picks the slot, the
`current` link names it) and `nvbootctrl` (Jetson rootfs A/B: the bootloader picks
the slot; here a stand-in `nvbootctrl` on PATH whose bootloader step runs at each
"reboot", tests/fake_nvbootctrl.py). Each step is cut in two ways:

* precise: at the Nth crash point the step crosses (``FLEET_AGENT_CRASH_AT=N``);
* timed: the agent stops itself at the step's first crash point
  (``FLEET_AGENT_PAUSE=1``, so the step has begun), is continued, and is killed (with
  any `nvbootctrl` it runs: the power goes for all) a fraction of the step's duration later. A kill counts only when it landed inside
  the step: the agent died by the signal without answering. One that came too late
  is tried again with half the delay, down to a kill at the pause point itself.

Right after each cut the `current` link names a complete slot. Then a copy of the
device reboots (it must come up on a valid, intact slot) and the interrupted step is
re-run, then the rest of the flow: it must end idle on the expected version. Which
cuts run comes from a seed: ``EDGEFLEET_CRASH_SEED``, else a random one; it is
printed, and named in every failure. The CI size: one timed kill per step for
directories, 200 cuts in all for nvbootctrl; ``EDGEFLEET_CRASH_TRIALS=N`` makes it N
timed kills per step for both; see docs/testing.md, "Power-loss tests".
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from fleet_runtime import slot_backends, slots
from fleet_runtime.agent import cli
from fleet_runtime.layout import Layout, atomic_write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fake_nvbootctrl  # noqa: E402
from fixtures_bundle import default_files, make_bundle, make_device, new_key  # noqa: E402

KEY = new_key()
AGENT = str(Path(sys.executable).parent / "fleet-agent")
SEED_ENV, TRIALS_ENV = "EDGEFLEET_CRASH_SEED", "EDGEFLEET_CRASH_TRIALS"
MAX_HALVINGS = 8
WORKERS = min(4, os.cpu_count() or 1)  # cuts are independent: each has its own device root
BACKENDS = ("directories", "nvbootctrl")
CI_CUTS = {"directories": 0, "nvbootctrl": 200}  # 0: every crash point and one timed kill a step
FILES = {f"opt/edgefleet/lib/part{i}.bin": bytes([i]) * (40 << 10) for i in range(5)}
FILES["opt/edgefleet/models/big.onnx"] = os.urandom(1 << 20) + b"tail"


@dataclass(frozen=True)
class Step:
    """One verb of the flow, cut while it runs; `before` brings a fresh device to its start."""

    name: str
    argv: tuple[str, ...]
    before: tuple[str, ...]
    target: str  # the version the flow ends on once the step is re-run and finished
    before_jetson: tuple[str, ...] = ()  # where the bootloader's retry count needs other steps


UPDATE = ("install", "activate", "boot", "commit")
STEPS = {s.name: s for s in (
    Step("install", ("install", "{bundle}"), (), "1.1.0"),
    Step("activate", ("activate",), ("install",), "1.1.0"),
    Step("boot", ("boot",), ("install", "activate"), "1.1.0"),  # activated -> trial
    Step("commit", ("commit",), ("install", "activate", "boot"), "1.1.0"),
    Step("rollback", ("rollback",), ("install", "activate", "boot"), "1.0.0"),
    Step("fallback", ("boot",), ("install", "activate-once", "boot"), "1.0.0",  # no trials left
         ("install", "activate", "boot", "boot", "boot")),  # the bootloader's 3 retries used
)}


@dataclass(frozen=True)
class Cut:
    step: str
    point: int = 0  # precise: the crash point's number (from 1)
    fraction: float = 0.0  # timed: of the step's duration, after it began

    def __str__(self) -> str:
        at = f"point {self.point}" if self.point else f"{self.fraction:.3f} of its duration"
        return f"{self.step} at {at}"


def timed_per_step(points: dict[str, int], total: int) -> int | None:
    """Timed kills per step so that the cuts come to `total` (None: one, the least)."""
    left = total - sum(points.values())
    return -(-left // len(points)) if left > len(points) else None


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


@pytest.fixture(scope="module", autouse=True)
def nvbootctrl_on_path(tmp_path_factory):
    """The stand-in first on PATH, here and in the agents (directories devices never call it)."""
    tool = fake_nvbootctrl.install(tmp_path_factory.mktemp("bin"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{tool.parent}:{os.environ['PATH']}")
        yield


def is_jetson(layout: Layout) -> bool:
    return fake_nvbootctrl.state_path(layout.root).exists()


def power_on(layout: Layout) -> None:
    """The firmware's part of a boot: on a Jetson the bootloader picks the rootfs slot."""
    if is_jetson(layout):
        fake_nvbootctrl.power_on(layout.root)


def reboot(layout: Layout) -> dict:
    power_on(layout)
    return slots.boot(layout)


def run_in_process(layout: Layout, verb: str, bundle_path: Path) -> None:
    """A step run here, not cut: to prepare a device, count points, or finish a flow."""
    if verb == "install":
        with open(bundle_path, "rb") as fh:
            slots.install(layout, fh)
    elif verb.startswith("activate"):
        slots.activate(layout, trials=1 if verb == "activate-once" else slots.DEFAULT_TRIALS)
    else:
        {"boot": reboot, "commit": slots.commit, "rollback": slots.rollback}[verb](layout)


def make_backend_device(root: Path, backend: str) -> Layout:
    layout = make_device(root, KEY)
    if backend == "nvbootctrl":
        atomic_write_json(slot_backends.config_path(layout), {"backend": "nvbootctrl"})
        fake_nvbootctrl.flash(root)
    return layout


def prepare(root: Path, step: Step, bundle_path: Path, backend: str) -> Layout:
    """A device at the start of `step`; for the boot steps the firmware has already run."""
    layout = make_backend_device(root, backend)
    reboot(layout)  # the first boot after flashing
    jetson = backend == "nvbootctrl" and step.before_jetson
    for verb in step.before_jetson if jetson else step.before:
        run_in_process(layout, verb, bundle_path)
    if step.argv[0] == "boot":
        power_on(layout)
    return layout


class Devices:
    """Fresh devices at the start of a step: prepared once, then copied (cheaper per cut)."""

    def __init__(self, folder: Path, bundle_path: Path, backend: str) -> None:
        self.folder, self.bundle_path, self.backend = folder, bundle_path, backend
        self.made: dict[str, Path] = {}

    def fresh(self, root: Path, step: Step) -> Layout:
        if step.name not in self.made:
            self.made[step.name] = self.folder / f"template-{step.name}"
            prepare(self.made[step.name], step, self.bundle_path, self.backend)
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(self.made[step.name], root, symlinks=True)
        return Layout(root)


def count_points(devices: Devices, root: Path, step: Step) -> int:
    """Crash points the step crosses (the agent runs the same code, so it crosses as many)."""
    bundle_path = devices.bundle_path
    layout = devices.fresh(root, step)
    os.environ[slots.CRASH_ENV] = str(10**9)
    try:
        slots._crossings.clear()
        # the agent's own command, run here (the slot verb and the update flow around
        # it; for boot the firmware's part already ran), so the subprocess crosses as many
        args = cli.build_parser().parse_args([a.format(bundle=bundle_path) for a in step.argv])
        args.handler(args, layout)
        return slots.crossings()
    finally:
        del os.environ[slots.CRASH_ENV]
        slots._crossings.clear()


def start_agent(layout: Layout, step: Step, bundle_path: Path, **env: str) -> subprocess.Popen:
    """In a process group of its own, so that a power cut takes what it runs with it."""
    argv = [a.format(bundle=bundle_path) for a in step.argv]
    return subprocess.Popen([AGENT, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "FLEET_ROOT": str(layout.root), **env},
                            start_new_session=True)


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
    os.killpg(proc.pid, signal.SIGKILL)  # the agent and an `nvbootctrl` it may be running
    return died_inside(proc)


def step_duration(devices: Devices, root: Path, step: Step) -> float:
    """Seconds from the step's first crash point to the agent's answer, on this machine now."""
    bundle_path = devices.bundle_path
    layout = devices.fresh(root, step)
    proc = start_agent(layout, step, bundle_path, **{slots.PAUSE_ENV: "1"})
    wait_paused(proc)
    started = time.perf_counter()
    os.kill(proc.pid, signal.SIGCONT)
    answer = proc.stdout.readline()  # the step's end: what follows is the interpreter exiting
    took = time.perf_counter() - started
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, (answer + out, err)
    return took


# ---------------------------------------------------------------------------- after the cut


def assert_link_complete(layout: Layout) -> None:
    """Right after the cut, before any boot: the `current` link names a whole slot."""
    name = slot_backends.link_target(layout)
    assert name in ("a", "b"), f"current link: {name!r}"
    assert (layout.slot(name) / "opt/edgefleet/VERSION").is_file(), f"slot {name} is not whole"
    assert slots.verify_slot(layout, name) == [], f"current link on slot {name}"


def assert_boots_valid(layout: Layout, sim_root: Path) -> None:
    """Boot a copy of the device after the power cut: valid slot, consistent, intact."""
    shutil.copytree(layout.root, sim_root, symlinks=True)
    sim = Layout(sim_root)
    booted = reboot(sim)
    assert slots.problems(sim) == [], slots.read_state(sim)
    assert slots.verify_slot(sim, booted["slot"]) == []
    for slot, record in slots.read_state(sim)["slots"].items():  # what it claims is intact
        if (record or {}).get("manifest_sha256") and record["status"] != "failed":
            manifest = slots.slot_manifest(sim, slot)
            assert manifest and manifest.digest == record["manifest_sha256"], (slot, record)
            assert slots.verify_slot(sim, slot) == [], (slot, record)
    assert booted["version"] in {"1.0.0", "1.1.0"}
    assert not list(sim.slots.glob(".staging-*")) and not list(sim.slots.glob(".trash-*"))
    assert slot_backends.link_target(sim) == booted["slot"] and not list(sim.slots.glob(".cur*"))
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

TRIAL, BEFORE, AFTER = ("trial", "1.1.0"), ("idle", "1.0.0"), ("idle", "1.1.0")
INSTALLED = ("installed", "1.0.0")
FAULT_TABLE = [
    # (step, crash point) -> per backend: (state after the power cut and one boot, version);
    # a backend missing from a row does not cross that point.
    ("install", "after-persist:1", {"directories": BEFORE, "nvbootctrl": BEFORE}),  # installing
    ("install", "write:3", {"directories": BEFORE, "nvbootctrl": BEFORE}),  # mid-payload
    ("install", "after-slot-rename", {"directories": BEFORE, "nvbootctrl": BEFORE}),
    ("install", "after-persist:2", {"directories": INSTALLED, "nvbootctrl": INSTALLED}),
    ("activate", "before-persist", {"directories": INSTALLED, "nvbootctrl": INSTALLED}),
    # persisted; the bootloader not yet told: a Jetson boots the old slot, back to installed
    ("activate", "after-persist", {"directories": TRIAL, "nvbootctrl": INSTALLED}),
    ("activate", "bootctl", {"nvbootctrl": INSTALLED}),
    ("activate", "after-bootctl", {"nvbootctrl": TRIAL}),
    ("boot", "before-persist", {"directories": TRIAL, "nvbootctrl": TRIAL}),  # boots b again
    ("boot", "after-persist", {"directories": TRIAL, "nvbootctrl": TRIAL}),
    ("boot", "link", {"directories": TRIAL, "nvbootctrl": TRIAL}),  # new link made, not renamed
    ("boot", "after-link", {"directories": TRIAL, "nvbootctrl": TRIAL}),
    ("commit", "bootctl", {"nvbootctrl": TRIAL}),  # not marked: the bootloader boots b again
    ("commit", "after-bootctl", {"nvbootctrl": TRIAL}),  # marked, not recorded: commit again
    ("commit", "before-persist", {"directories": TRIAL, "nvbootctrl": TRIAL}),
    ("commit", "after-persist", {"directories": AFTER, "nvbootctrl": AFTER}),
    ("rollback", "bootctl", {"nvbootctrl": TRIAL}),  # still on trial, one boot fewer
    # the bootloader already set back to a: the boot finds the trial over
    ("rollback", "before-persist", {"directories": TRIAL, "nvbootctrl": BEFORE}),
    ("rollback", "after-persist", {"directories": BEFORE, "nvbootctrl": BEFORE}),
    ("rollback", "link", {"directories": BEFORE, "nvbootctrl": BEFORE}),
    ("fallback", "before-persist", {"directories": BEFORE, "nvbootctrl": BEFORE}),
    ("fallback", "after-persist", {"directories": BEFORE, "nvbootctrl": BEFORE}),
    ("fallback", "after-link", {"directories": BEFORE, "nvbootctrl": BEFORE}),
]
CASES = [(backend, name, point, *outcome[backend]) for name, point, outcome in FAULT_TABLE
         for backend in BACKENDS if backend in outcome]


@pytest.mark.parametrize("backend,name,point,state,version", CASES)
def test_killed_in_state(tmp_path, update_bundle, backend, name, point, state, version):
    step = STEPS[name]
    layout = prepare(tmp_path / "dev", step, update_bundle, backend)
    proc = start_agent(layout, step, update_bundle, **{slots.CRASH_ENV: point})
    assert died_inside(proc)
    assert_link_complete(layout)
    reboot(layout)
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


def cut_once(cut: Cut, devices: Devices, root: Path, durations: dict[str, float]) -> int:
    """Run one cut on a fresh device, check the aftermath; the kills it took to land."""
    step, bundle_path = STEPS[cut.step], devices.bundle_path
    attempts, landed = 0, False
    delay: float | None = cut.fraction * durations[cut.step]
    while not landed:
        layout = devices.fresh(root, step)
        attempts += 1
        if cut.point:
            landed = died_inside(start_agent(layout, step, bundle_path,
                                             **{slots.CRASH_ENV: str(cut.point)}))
            assert landed, "the agent crossed fewer crash points than counted"
        else:
            landed = timed_kill(layout, step, bundle_path, delay)
            # Too late (the step had answered): half the delay, at last none at all.
            delay = None if attempts >= MAX_HALVINGS else (delay or 0.0) / 2
    assert_link_complete(layout)
    assert_boots_valid(layout, root.with_name(root.name + "-sim"))
    finish(layout, step, bundle_path)
    shutil.rmtree(root)
    return attempts


@pytest.mark.timeout(900)  # 200 cuts: under a minute on 2 idle cores, minutes on a loaded one
@pytest.mark.parametrize("backend", BACKENDS)
def test_power_cuts_from_a_seed(tmp_path, update_bundle, backend):
    seed, trials = run_seed(), run_trials()
    devices = Devices(tmp_path, update_bundle, backend)
    points = {n: count_points(devices, tmp_path / f"count-{n}", s) for n, s in STEPS.items()}
    trials = trials or timed_per_step(points, CI_CUTS[backend])
    print(f"\npower-loss seed ({backend}): {SEED_ENV}={seed} "
          f"({TRIALS_ENV}={run_trials() or f'unset: CI size, {trials or 1} timed a step'})")
    durations = {n: step_duration(devices, tmp_path / f"time-{n}", s) for n, s in STEPS.items()}
    cuts = plan_cuts(seed, points, trials)
    attempts, failures = run_cuts(cuts, devices, tmp_path, durations)
    if failures:
        i, cut, exc = failures[0]
        pytest.fail(f"{backend} cut {i} ({cut}): {exc!r}\nreproduce with {SEED_ENV}={seed}"
                    + (f" {TRIALS_ENV}={run_trials()}" if run_trials() else ""))
    print(f"{backend}: {len(cuts)} cuts landed inside their step ({attempts} kills, "
          f"{WORKERS} at a time), points {points}")


def run_cuts(cuts: list[Cut], devices: Devices, folder: Path,
             durations: dict[str, float]) -> tuple[int, list[tuple[int, Cut, BaseException]]]:
    """Each cut on its own device, a few at once; the kills taken and the failures, in order."""
    with ThreadPoolExecutor(WORKERS) as pool:
        runs = [(i, cut, pool.submit(cut_once, cut, devices, folder / f"cut{i}", durations))
                for i, cut in enumerate(cuts)]
        attempts, failures = 0, []
        for i, cut, run in runs:
            if run.exception() is None:
                attempts += run.result()
            else:
                failures.append((i, cut, run.exception()))
    return attempts, failures
