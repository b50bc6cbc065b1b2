"""`kill -9` of a running `fleet play`, then `fleet play resume`: no task that had finished on
a device runs there again, registered values come back from the journal, and the run ends
with every task done on every device.

The kill lands after a seeded random number of finished tasks: the seed comes from
EDGEFLEET_CRASH_SEED (random when unset) and is printed, so a failure can be replayed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from labkit import run_cli, start_lab
from playkit import write_ops, write_playbook

SEED_ENV = "EDGEFLEET_CRASH_SEED"
TASKS = 4
WAIT_S = 120.0


def _seed() -> int:
    raw = os.environ.get(SEED_ENV)
    seed = int(raw) if raw else random.SystemRandom().randrange(1, 2**32)
    print(f"\n{SEED_ENV}={seed}  (set it to replay this kill point)", flush=True)
    return seed


def _finished(journal: Path) -> set[tuple[str, str]]:
    """(device, task id) of every task_done event in the journal (complete lines only)."""
    out = set()
    for raw in journal.read_bytes().splitlines(keepends=True):
        if raw.endswith(b"\n"):
            event = json.loads(raw)
            if event.get("event") == "task_done":
                out.add((event["device"], event["task"]))
    return out


def _wait_for_tasks(folder: Path, proc: subprocess.Popen[bytes], count: int) -> Path:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for journal in folder.glob("*.jsonl") if folder.is_dir() else []:
            if len(_finished(journal)) >= count:
                return journal
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.005)  # polling a file another process writes: nothing else to wait on
    raise AssertionError(f"the play never finished {count} tasks")


def test_kill_9_mid_play_then_resume_repeats_no_finished_task(tmp_path: Path) -> None:
    seed = _seed()
    (tmp_path / "lab").mkdir()
    lab = start_lab(tmp_path / "lab", 2, 4)
    try:
        root = lab.project.root
        write_ops(root)
        (root / "fleet.yaml").write_text("concurrency: 2\n")
        marks = tmp_path / "marks.txt"
        steps = "".join(
            f"    - name: t{i}\n      lab.probe: {{marks: \"{marks}\", label: \"t{i}"
            + ("-{{ r.software }}" if i == 3 else "") + "\"}\n"
            + ("      register: r\n" if i == 1 else "") for i in range(1, TASKS + 1))
        book = write_playbook(root, "- name: resumable\n  hosts: all\n  serial: [2, \"50%\"]\n"
                                    "  tasks:\n" + steps, "resume.yaml")
        total = 8 * TASKS
        kill_after = random.Random(seed).randint(2, total - 3)
        print(f"kill after {kill_after} of {total} finished tasks", flush=True)
        proc = subprocess.Popen([sys.executable, "-m", "fleet.cli.main", "--project", str(root),
                                 "--no-color", "play", str(book), "-i", "lab"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        journal = _wait_for_tasks(root / ".fleet" / "plays", proc, kill_after)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        done_at_kill = _finished(journal)
        marked_at_kill = len(marks.read_text().splitlines()) if marks.exists() else 0
        status = json.loads(run_cli(root, "play", "status", "--json").stdout)
        assert status["status"] == "interrupted", f"seed={seed}: {status['status']}"

        resumed = run_cli(root, "play", "resume", journal.stem, "--json")
        assert resumed.exit_code == 0, f"seed={seed}: {resumed.stderr}"
        report = json.loads(resumed.stdout.splitlines()[-1])["report"]
        assert report["status"] == "completed" and report["id"] == journal.stem
        after = marks.read_text().splitlines()[marked_at_kill:]
        label_of = {f"{i - 1}": f"t{i}" for i in range(1, TASKS + 1)}
        repeated = [line for line in after
                    if (line.split()[0], _task_of(line, label_of)) in done_at_kill]
        assert not repeated, f"seed={seed}: finished tasks ran again: {repeated}"
        lines = marks.read_text().splitlines()
        for device in _devices(root):
            for i in range(1, TASKS + 1):
                assert any(line.startswith(f"{device} t{i}") for line in lines), \
                    f"seed={seed}: {device} never ran t{i}"
        assert all(line.endswith("-1.0.0") for line in lines if " t3" in line), \
            f"seed={seed}: a registered value was lost across the kill"
        final = json.loads(run_cli(root, "play", "status", "--json").stdout)
        assert final["status"] == "completed"
    finally:
        lab.down()


def _task_of(line: str, label_of: dict[str, str]) -> str:
    label = line.split()[1].split("-")[0]
    return next(task for task, name in label_of.items() if name == label)


def _devices(root: Path) -> list[str]:
    listing = run_cli(root, "inventory", "list", "-i", "lab", "--json")
    return [d["name"] for d in json.loads(listing.stdout)["devices"]]
