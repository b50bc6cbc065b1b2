"""The face-blur example deployed across a lab fleet, each device with its own registry camera.

Must show (#16): on the lab (real sshd, a real RTSP server) the face-blur
example deployed in batches ``[1, "30%", "100%"]`` with per-device cameras
from the registry; each device's runtime /health shows its own cameras at or
above the minimum fps. And: ``kill -9`` of the controller at random moments during a
deploy, then ``fleet app resume``: every device ends on the target, none staged
twice (from the journal). The seed comes from EDGEFLEET_CRASH_SEED (random when
unset, printed); EDGEFLEET_APP_KILLS sets the number of kills (3).

Default size 3 devices (CI time); the must-show's 30 with ``EDGEFLEET_APP_FLEET=30``
(see tests/apps/applab.py).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")

from applab import (  # noqa: E402
    CODE,
    HEALTH,
    SEED_ENV,
    AppLab,
    Kill,
    app_lab,
    app_state,
    camera_fps,
    face_blur,
    fleet_process,
    fleet_size,
    kill_count,
    runtime_health,
    seed_from_env,
    staged_steps,
    wait_for,
)
from labkit import run_cli  # noqa: E402

from fleet.rollout.journal import Journal  # noqa: E402

# A batch waits for its devices' runtimes and gates: the whole module scales with the fleet.
pytestmark = [pytest.mark.servers, pytest.mark.timeout(600 + 60 * fleet_size())]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    with app_lab(tmp_path_factory.mktemp("applab"), fleet_size()) as lab:
        yield lab


def test_face_blur_on_every_device_with_its_own_cameras(fleet: AppLab, tmp_path: Path) -> None:
    bundle = fleet.build(face_blur(tmp_path), "1.0.0")
    res = run_cli(fleet.root, *fleet.deploy_argv(bundle, "--batches", "1,30%,100%",
                                                 "--concurrency", "10"))
    doc = json.loads(res.stdout.splitlines()[-1])
    assert "report" in doc, (res.stdout, res.stderr[-3000:])
    report = doc["report"]
    names = fleet.names()
    assert res.exit_code == 0, res.stdout[-3000:]
    assert report["counts"] == {"succeeded": len(names)}, report
    assert [len(b) for b in report["batches"]] == _sizes(len(names)), report["batches"]
    for name in names:
        health = runtime_health(fleet.lab, name)
        assert health["ready"] and health["status"] in ("ok", "degraded"), (name, health)
        assert set(health["cameras"]) == {f"{name}-cam1"}, (name, health["cameras"])
        assert health["cameras"][f"{name}-cam1"]["connected"], (name, health["cameras"])
    measured = camera_fps(fleet.lab, names)
    print({name: round(fps[f"{name}-cam1"], 2) for name, fps in measured.items()})
    slow = {name: fps for name, fps in measured.items() if fps[f"{name}-cam1"] < HEALTH["min_fps"]}
    assert not slow, f"below {HEALTH['min_fps']} fps: {slow}"


def _journal(root: Path, proc: subprocess.Popen[bytes], before: set[Path]) -> Journal | None:
    """This deploy's journal (not an earlier rollout's), once it has planned its batches."""
    folder = root / ".fleet/rollouts"
    for path in set(folder.glob("*.jsonl") if folder.is_dir() else []) - before:
        if '"event": "planned"' in path.read_text():
            return Journal(path)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    return None


def _sizes(total: int) -> list[int]:
    """Ansible's serial [1, "30%", "100%"]: one, then 30% of the fleet, then the rest."""
    second = max(1, int(total * 0.3))
    return [1, second, total - 1 - second]


def test_controller_killed_at_random_moments_then_resumed(fleet: AppLab, tmp_path: Path) -> None:
    """`kill -9` of `fleet app deploy` (then of each `fleet app resume`) at seeded random
    moments; the last resume finishes: every device on the target, none staged twice."""
    seed = seed_from_env()
    rng = random.Random(seed)
    app = face_blur(tmp_path)
    code = app / CODE
    code.write_text(code.read_text() + "\n# 1.1.0: a code-only change\n")
    bundle = fleet.build(app, "1.1.0")
    names = fleet.names()
    before = set((fleet.root / ".fleet/rollouts").glob("*.jsonl"))
    proc = fleet_process(fleet.root, *fleet.deploy_argv(bundle, "--batches", "1,30%,100%",
                                                        "--concurrency", "10"))
    journal = wait_for("the rollout's journal", lambda: _journal(fleet.root, proc, before))
    kills: list[Kill] = []
    for number in range(kill_count()):
        delay = rng.uniform(2.0, 10.0 + len(names))  # up to about one deploy of the fleet
        try:
            proc.wait(delay)
            break  # it finished before this kill: nothing left to interrupt
        except subprocess.TimeoutExpired:
            pass
        proc.kill()  # SIGKILL: no handler runs, no journal line is finished for it
        proc.wait()
        kills.append(Kill.now(fleet.lab, journal, names, "1.1.0", delay))
        print(f"kill {number + 1} after {delay:.1f}s: {kills[-1].states}", flush=True)
        if journal.report().status == "completed":
            break  # the kill came after its last journal line: nothing left to resume
        proc = fleet_process(fleet.root, "app", "resume", journal.id, "--json")
    _, err = proc.communicate(timeout=900)
    where = f"{SEED_ENV}={seed}"
    assert proc.returncode in (0, -signal.SIGKILL), f"{where}: {err.decode()[-3000:]}"
    report = journal.report()
    assert report.status == "completed", f"{where}: {report.status} {report.reason}"
    assert report.counts() == {"succeeded": len(names)}, f"{where}: {report.counts()}"
    for name in names:
        status = app_state(fleet.lab, name)
        assert (status["state"], status["committed"]) == ("done", "1.1.0"), (where, name, status)
        assert status["current"] == "1.1.0", (where, name, status)
    staged = staged_steps(journal)
    for name in names:
        allowed = 1 + sum(k.mid_stage.get(name, False) for k in kills)
        assert staged.get(name, 0) <= allowed, \
            f"{where}: {name} staged {staged[name]} times (kills: {kills})"
    print(f"{where}: {len(kills)} kill(s), every device on 1.1.0, stages {staged}")
