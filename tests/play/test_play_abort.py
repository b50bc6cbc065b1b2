"""`fleet play abort`: a running play stops before each device's next task and starts no
more devices; a run nobody runs is closed at once; an aborted run is never resumed.

No devices are needed: the operations here never contact one (a static inventory)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from labkit import run_cli
from playkit import write_inventory, write_ops, write_playbook

from fleet.play.journal import PlayJournal
from fleet.project import Project

# What `fleet play abort` does from another shell, asked from inside the run itself: the
# moment is then exact (no sleeping for the run to get there).
ABORT_OPS = '''
from fleet.play import engine
from fleet.play.operations import OpContext, Outcome, operation


@operation("aborttest.ask")
def ask(ctx: OpContext) -> Outcome:
    engine.abort(ctx.project, None, "stop here")
    return Outcome()
'''
PLAY = """\
- name: two tasks, one device at a time
  hosts: all
  serial: 1
  tasks:
    - {name: first, aborttest.ask: {}}
    - {name: second, lab.echo: {value: 1}}
"""


def _project(root: Path) -> Path:
    write_inventory(root, {"berlin": 2})
    write_ops(root)
    (root / "playbooks" / "operations" / "abortops.py").write_text(ABORT_OPS)
    return write_playbook(root, PLAY, "abort.yaml")


def _journal(root: Path, run_id: str) -> list[dict[str, Any]]:
    path = root / ".fleet" / "plays" / f"{run_id}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_running_play_stops_before_the_next_task_and_is_not_resumed(tmp_path: Path) -> None:
    book = _project(tmp_path)
    result = run_cli(tmp_path, "play", str(book), "-i", "lab", "--json")
    assert result.exit_code == 1, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])["report"]
    assert (report["status"], report["reason"]) == ("aborted", "play 'two tasks, one device "
                                                    "at a time': stop here")
    done = [(e["device"], e["name"]) for e in _journal(tmp_path, report["id"])
            if e["event"] == "task_done"]
    assert done == [("berlin-01", "first")]  # no second task, no second device
    recap = {row["device"]: row for row in report["recap"]}
    assert recap["berlin-01"]["reason"] == "stopped before 'second': stop here"
    assert recap["berlin-02"]["not_run"]

    resumed = run_cli(tmp_path, "play", "resume", report["id"])
    assert resumed.exit_code == 2
    assert resumed.stderr.strip() == (f"error: play run {report['id']} is aborted: nothing "
                                      "to resume; start it again with `fleet play PLAYBOOK`")


def test_a_run_nobody_runs_is_closed_as_aborted(tmp_path: Path) -> None:
    _project(tmp_path)
    journal = PlayJournal.create_play(Project.locate(tmp_path), {"playbook": "x.yaml"})
    for event in ({"event": "play_started", "play": 0, "name": "p", "devices": ["berlin-01"]},
                  {"event": "device_started", "play": 0, "device": "berlin-01", "batch": 1}):
        journal.append(event)
    journal.release()  # the controller died here

    result = run_cli(tmp_path, "play", "abort", journal.id)
    assert result.exit_code == 0, result.stderr
    assert f"play run {journal.id} aborted" in result.stderr
    status = run_cli(tmp_path, "play", "status", journal.id, "--json")
    report = json.loads(status.stdout)
    assert (report["status"], report["reason"]) == ("aborted", "aborted by operator")
    assert report["recap"][0]["device"] == "berlin-01" and report["recap"][0]["not_run"]
    assert run_cli(tmp_path, "play", "resume", journal.id).exit_code == 2
    again = run_cli(tmp_path, "play", "abort", journal.id)
    assert again.exit_code == 2
    assert f"play run {journal.id} is already aborted" in again.stderr


def test_abort_answers_json_with_the_run_s_report(tmp_path: Path) -> None:
    _project(tmp_path)
    journal = PlayJournal.create_play(Project.locate(tmp_path), {"playbook": "x.yaml"})
    journal.append({"event": "play_started", "play": 0, "name": "p", "devices": ["berlin-01"]})
    journal.release()

    result = run_cli(tmp_path, "play", "abort", journal.id, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["id"], report["status"]) == (journal.id, "aborted")
