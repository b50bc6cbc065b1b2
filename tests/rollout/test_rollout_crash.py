"""Randomized controller crashes over a whole rolling rollout: after every `kill -9` and
`fleet ota resume`, each device ends idle on the target, committed, installed once.

The seed comes from EDGEFLEET_CRASH_SEED (random when unset) and is printed; the same
seed draws the same kill points. The normal suite runs a few points on a small lab;
`pytest -m crash_full` runs 50+ over a larger one (see docs/testing.md).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from crashkit import (
    PHASES,
    Trial,
    crash_recipe,
    fleet,
    installs,
    leftovers,
    plan_points,
    seed_from_env,
)
from lab_rollouts import SECRET, lab_project, versions

from fleet import firmware
from fleet.lab import Lab
from fleet.rollout.journal import Journal


def crash_rollout(tmp_path: Path, sites: int, per_site: int, points: int | None,
                  batches: str) -> tuple[Lab, Trial, int]:
    seed = seed_from_env()
    rng = random.Random(seed)
    lab = lab_project(tmp_path, sites, per_site, via_cli=True)
    try:
        bundle = firmware.build(lab.project, crash_recipe(lab), passphrase=SECRET.encode()).path
        proc = fleet(lab.project.root, "ota", "rollout", str(bundle), "-i", "lab",
                     "--batches", batches, "--concurrency", "1")
        journal = _wait_for_plan(lab, proc)
        order = [d for batch in journal.report().batches for d in batch]
        trial = Trial(lab, "1.1.0", plan_points(rng, order, points), rng)
        print("kill points:", trial.points, flush=True)
        last = trial.run(proc, journal.id)
        assert last.wait(600) == 0, f"seed={seed}: " + (last.stderr.read().decode()
                                                         if last.stderr else "")
        print(trial.summary(), flush=True)
        _assert_every_device_done(lab, journal, seed)
    except BaseException:
        lab.down()
        raise
    return lab, trial, seed


def _wait_for_plan(lab: Lab, proc) -> Journal:
    folder = lab.project.state_dir / "rollouts"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for path in folder.glob("*.jsonl") if folder.is_dir() else []:
            if '"event": "planned"' in path.read_text():
                return Journal(path)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.01)
    raise AssertionError("the rollout never planned its batches")


def _assert_every_device_done(lab: Lab, journal: Journal, seed: int) -> None:
    report = journal.report()
    where = f"seed={seed}"
    assert report.status == "completed", f"{where}: {report.status} {report.reason}"
    assert report.counts() == {"succeeded": len(report.devices)}, f"{where}: {report.counts()}"
    for name in report.devices:
        doc = json.loads(lab.layout(name).boot_json.read_text())
        active = doc["slots"][doc["active"]]
        assert doc["state"] == "idle", f"{where}: {name} is {doc['state']}"
        assert doc["committed_slot"] == doc["active"] and active["committed"], \
            f"{where}: {name} runs slot {doc['active']} but committed {doc['committed_slot']}"
        assert active["version"] == "1.1.0", f"{where}: {name} runs {active['version']}"
        assert installs(lab, name) == 1, f"{where}: {name} installed {installs(lab, name)} times"
    assert set(versions(lab).values()) == {"1.1.0"}


def test_random_kills_during_a_rollout_then_resume(tmp_path: Path) -> None:
    """One kill point per phase, on devices drawn at random from 3: fast enough for every
    run."""
    lab, trial, seed = crash_rollout(tmp_path, 1, 3, points=None, batches="1,100%")
    lab.down()
    assert leftovers(lab) == [], f"seed={seed}: `lab down` left these running"
    assert len(trial.landed) >= 1, f"seed={seed}: {trial.summary()}"


@pytest.mark.crash_full
def test_fifty_random_kills_over_a_rolling_rollout(tmp_path: Path) -> None:
    """64 kill points drawn over 16 devices in rolling batches; at least 50 must land,
    at least 5 in each phase."""
    lab, trial, seed = crash_rollout(tmp_path, 2, 8, points=64, batches="1,25%,100%")
    lab.down()
    assert leftovers(lab) == [], f"seed={seed}: `lab down` left these running"
    landed = {p: sum(1 for _, q in trial.landed if q == p) for p in PHASES}
    assert len(trial.landed) >= 50, f"seed={seed}: {trial.summary()}"
    assert min(landed.values()) >= 5, f"seed={seed}: {trial.summary()}"
