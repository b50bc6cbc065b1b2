"""SIGKILL of the agent at random points of stage, activate and commit: the application is
always runnable at the old or the new version, and the next commands finish the deploy.

Each trial copies a device that runs the colour classifier 1.0.0 (committed) and
holds the blobs of 2.0.0, then kills one of ``app stage``, ``app activate`` or
``app commit`` either at one of the crash points it crosses (``FLEET_AGENT_CRASH_AT``)
or after a random delay. After the kill ``current`` must name a complete version,
1.0.0 or 2.0.0, whose files match their SHA-256 and which the runtime's own loader
accepts; then the controller's retry (the killed command again, and the rest)
must end on 2.0.0, committed.

Trials: every crash point of the three commands once, then kills after a random delay
(4 by default); ``EDGEFLEET_APP_CRASH_TRIALS`` sets the total, ``-m crash_full`` runs 200.
Seed: ``EDGEFLEET_CRASH_SEED`` (printed; random when unset).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("onnx")

from device_apps import AGENT, agent, send_app  # noqa: E402
from fleet_runtime.apps.versions import RELEASE_FILE, AppDirs  # noqa: E402
from fleet_runtime.layout import Layout  # noqa: E402
from fleet_runtime.manifest import load_application  # noqa: E402

SEED_ENV, TRIALS_ENV = "EDGEFLEET_CRASH_SEED", "EDGEFLEET_APP_CRASH_TRIALS"
SEED = int(os.environ.get(SEED_ENV) or random.randrange(1 << 30))  # noqa: S311 - test seed
OLD, NEW = "1.0.0", "2.0.0"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, color_app: Path) -> tuple[Path, Path]:
    """A device on 1.0.0 (committed) with 2.0.0's blobs sent; the 2.0.0 manifest."""
    tmp = tmp_path_factory.mktemp("crash")
    root = tmp / "dev"
    (root / "etc/fleet").mkdir(parents=True)
    v1 = send_app(root, color_app, "color", OLD, tmp)
    assert agent(root, "app", "stage", str(v1))[0] == 0
    assert agent(root, "app", "activate", "color", "--no-wait")[0] == 0
    assert agent(root, "app", "commit", "color", "--force")[0] == 0
    new_app = tmp / "color2"
    shutil.copytree(color_app, new_app)
    code = next(new_app.rglob("application.py"))
    code.write_text(code.read_text() + "\n# 2.0.0: a code-only change\n")
    return root, send_app(root, new_app, "color", NEW, tmp)


def commands(manifest: Path) -> list[list[str]]:
    return [["app", "stage", str(manifest)], ["app", "activate", "color", NEW, "--no-wait"],
            ["app", "commit", "color", "--force"]]


def points(manifest: Path) -> list[int]:
    """Crash points each command crosses: stage's per file, four for activate and commit."""
    files = len(json.loads(manifest.read_text())["files"])
    return [files + 3, 4, 4]


def runnable(root: Path) -> str:
    """The version ``current`` names, after checking it is whole and loads."""
    dirs = AppDirs(Layout(root), "color")
    version = dirs.current_version()
    assert version in (OLD, NEW), f"current names {version}"
    folder = dirs.version(version)
    release = json.loads((folder / RELEASE_FILE).read_text())
    for entry in release["files"]:
        data = (folder / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]
    load_application(folder, None, 8)
    return version


def kill_on_a_timer(root: Path, argv: list[str], delay: float) -> int:
    env = {**os.environ, "FLEET_ROOT": str(root)}
    proc = subprocess.Popen([*AGENT, *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        proc.wait(delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
    return proc.wait()


Kill = tuple[int, int | None]  # (command index, crash point; None: a random delay)


def plan(manifest: Path, rng: random.Random, count: int | None) -> list[Kill]:
    """Every crash point of every command once (shuffled), then random kills up to `count`
    (default: the points plus 4 kills after a random delay)."""
    every: list[Kill] = [(k, n) for k, most in enumerate(points(manifest))
                         for n in range(1, most + 1)]
    rng.shuffle(every)
    count = len(every) + 4 if count is None else count
    kills = every[:count]
    while len(kills) < count:
        kills.append(rng.choice(every) if rng.random() < 0.7 else (rng.randrange(3), None))
    return kills


def trial(base: tuple[Path, Path], kill: Kill, rng: random.Random, where: Path) -> str:
    root, manifest = base
    shutil.copytree(root, where, symlinks=True)
    steps, (kill_in, nth) = commands(manifest), kill
    for argv in steps[:kill_in]:
        assert agent(where, *argv)[0] == 0
    if nth is not None:
        code, _ = agent(where, *steps[kill_in], env={"FLEET_AGENT_CRASH_AT": str(nth)})
        how = f"{steps[kill_in][1]} at crash point {nth}"
        assert code == -signal.SIGKILL, f"{how} was not killed"
    else:
        delay = rng.uniform(0.05, 1.5)
        kill_on_a_timer(where, steps[kill_in], delay)
        how = f"{steps[kill_in][1]} after {delay:.2f}s"
    assert runnable(where), how
    for argv in steps[kill_in:]:  # the controller's retry
        code, doc = agent(where, *argv)
        assert code == 0, (how, argv, doc)
    assert runnable(where) == NEW, how
    shutil.rmtree(where)
    return how


def run_trials(base: tuple[Path, Path], tmp_path: Path, count: int | None) -> None:
    rng = random.Random(SEED)
    kills = plan(base[1], rng, count)
    print(f"\napp crash seed: {SEED_ENV}={SEED} ({len(kills)} trials)")
    for n, kill in enumerate(kills):
        try:
            trial(base, kill, rng, tmp_path / f"t{n}")
        except AssertionError as exc:
            raise AssertionError(f"trial {n} ({SEED_ENV}={SEED}): {exc}") from None


def test_agent_killed_during_a_deploy_leaves_a_runnable_version(base, tmp_path):
    trials = os.environ.get(TRIALS_ENV)
    run_trials(base, tmp_path, int(trials) if trials else None)


@pytest.mark.crash_full
def test_agent_killed_during_a_deploy_200_trials(base, tmp_path):
    run_trials(base, tmp_path, 200)
