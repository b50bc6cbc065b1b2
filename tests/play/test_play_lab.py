"""`fleet play` on a real lab over sshd: batches through the rollout runner, a project's own
operation (run and check mode), the recap and --json.

The 30-device must-show: ``serial: [1, "30%"]`` (batches of 1, 9, 9, 9, 2) with
``max_fail_percentage: 10`` and a task failing on 4 devices of the second batch: the play
stops before the third batch, and the recap names the 4.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from labkit import run_cli, start_lab
from playkit import write_ops, write_playbook

from fleet.lab import Lab


@pytest.fixture(scope="module")
def lab30(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = start_lab(tmp_path_factory.mktemp("play30"), 3, 10)
    write_ops(lab.project.root)
    (lab.project.root / "fleet.yaml").write_text("concurrency: 10\n")
    yield lab
    lab.down()


def _stream(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_failing_second_batch_stops_the_play_before_the_third(lab30: Lab) -> None:
    root = lab30.project.root
    batches = _batches(root)
    failing = batches[1][:4]
    book = write_playbook(root, f"""\
- name: probe the fleet
  hosts: all
  serial: [1, "30%"]
  max_fail_percentage: 10
  vars:
    chosen: {json.dumps(failing)}
  tasks:
    - name: read the agent
      lab.probe: {{fail_on: "{{{{ chosen }}}}"}}
""", "stop.yaml")
    result = run_cli(root, "play", str(book), "-i", "lab", "--json")
    assert result.exit_code == 1, result.stderr
    events = _stream(result.stdout)
    report = events[-1]["report"]
    assert report["status"] == "stopped"
    started = [e["batch"] for e in events if e.get("event") == "batch_started"]
    assert started == [1, 2], f"the third batch must not start: {started}"
    recap = {r["device"]: r for r in report["recap"]}
    assert sorted(n for n, r in recap.items() if r["failed"]) == sorted(failing)
    touched = {e["device"] for e in events if e.get("event") == "task_done"}
    assert touched == set(batches[0] + batches[1])
    assert all(recap[n]["not_run"] for b in batches[2:] for n in b)
    human = run_cli(root, "play", "status")
    for name in failing:
        assert f"{name}: read the agent: asked to fail on {name}" in human.stdout


def _batches(root: Path) -> list[list[str]]:
    """The runner's batches for [1, 30%] over the lab, from --list-hosts' order."""
    from fleet.rollout.batches import batch_sizes

    listing = run_cli(root, "play", str(write_playbook(root, "- name: l\n  hosts: all\n"
                                                             "  tasks: []\n", "list.yaml")),
                      "-i", "lab", "--list-hosts", "--json")
    names = json.loads(listing.stdout)["plays"][0]["devices"]
    sizes = batch_sizes([1, "30%"], len(names))
    assert sizes == [1, 9, 9, 9, 2]
    out, start = [], 0
    for size in sizes:
        out.append(names[start:start + size])
        start += size
    return out


def test_project_operation_runs_and_check_mode_changes_nothing(lab30: Lab,
                                                                tmp_path: Path) -> None:
    root = lab30.project.root
    marks = tmp_path / "marks.txt"
    book = write_playbook(root, f"""\
- name: project op
  hosts: "berlin-0[12]:&berlin"
  tasks:
    - name: note once
      lab.note: {{text: hi}}
      register: n
    - name: label
      lab.probe: {{marks: "{marks}", label: "{{{{ n.text | default('check') }}}}"}}
      register: p
    - name: read again
      lab.probe: {{}}
      when: p.software is defined
""", "project-op.yaml")
    check = run_cli(root, "play", str(book), "-i", "lab", "--check", "--diff")
    assert check.exit_code == 0, check.stderr
    assert not marks.exists(), "check mode must not act"
    assert "unpredictable: [*] note once: cannot tell without writing" in check.stderr
    assert "label: None -> check" in check.stderr
    assert "skipped: [berlin-02] read again: condition false" in check.stderr
    real = run_cli(root, "play", str(book), "-i", "lab", "--json")
    assert real.exit_code == 0, real.stderr
    assert sorted(marks.read_text().splitlines()) == ["berlin-01 hi", "berlin-02 hi"]
    recap = {r["device"]: r for r in _stream(real.stdout)[-1]["report"]["recap"]}
    assert set(recap) == {"berlin-01", "berlin-02", "(once)"}
    assert recap["berlin-01"]["changed"] == 1 and recap["berlin-01"]["ok"] == 1
    assert recap["(once)"]["changed"] == 1
