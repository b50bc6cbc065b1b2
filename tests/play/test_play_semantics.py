"""What a play does with its tasks: variable precedence, block/rescue/always, handlers,
ignore_errors, tags, --limit, and the run-time refusals a static check cannot see."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labkit import run_cli, start_lab
from playkit import write_inventory, write_ops, write_playbook

from fleet import inventory as inv
from fleet.lab import Lab
from fleet.play.variables import host_layers
from fleet.project import Project


@pytest.fixture(scope="module")
def lab3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = start_lab(tmp_path_factory.mktemp("play3"), 1, 3)
    write_ops(lab.project.root)
    yield lab
    lab.down()


def _events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def _done(events: list[dict[str, Any]], device: str) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in events if e.get("event") == "task_done"
            and e["device"] == device}


def test_inventory_layers_defaults_then_groups_then_host(tmp_path: Path) -> None:
    write_inventory(tmp_path, {"berlin": 1})
    folder = tmp_path / "inventories" / "lab"
    (folder / "defaults.yaml").write_text("data: {owner: ops, city: nowhere, tier: d}\n")
    (folder / "groups.yaml").write_text("site-berlin: {data: {city: berlin, tier: g}}\n")
    hosts = (folder / "hosts.yaml").read_text().replace("tags: []", "tags: [], tier: h")
    (folder / "hosts.yaml").write_text(hosts)
    host = inv.load(Project.locate(tmp_path), "lab").inventory.hosts["berlin-01"]
    got = host_layers(host)
    assert (got["owner"], got["city"], got["tier"]) == ("ops", "berlin", "h")
    assert got["inventory_hostname"] == "berlin-01" and got["group_names"] == ["site-berlin"]


def test_precedence_play_vars_files_registered_extra(lab3: Lab) -> None:
    root = lab3.project.root
    (root / "playbooks" / "layer.yaml").write_text("b: file\nc: file\nd: file\n")
    book = write_playbook(root, """\
- name: layers
  hosts: berlin-01
  vars: {a: play, b: play, c: play, d: play, e: play}
  vars_files: [layer.yaml]
  tasks:
    - {name: reg c, lab.echo: {value: registered}, register: c}
    - {name: reg d, lab.echo: {value: registered}, register: d}
    - name: all layers
      lab.echo: {value: "{{ a }}/{{ b }}/{{ c.value }}/{{ d }}/{{ e }}/{{ site }}"}
      register: out
""", "precedence.yaml")
    result = run_cli(root, "play", str(book), "-i", "lab", "-e", "d=cli", "-e", "e=cli",
                     "--json")
    assert result.exit_code == 0, result.stderr
    out = _done(_events(result.stdout), "berlin-01")["all layers"]["value"]["value"]
    assert out == "play/file/registered/cli/cli/berlin"


def test_progress_is_shown_but_not_journaled(lab3: Lab) -> None:
    root = lab3.project.root
    book = write_playbook(root, "- name: p\n  hosts: berlin-01\n  tasks:\n"
                                "    - {name: talk, lab.echo: {value: 1}}\n", "progress.yaml")
    result = run_cli(root, "play", str(book), "-i", "lab", "--json")
    steps = [e for e in _events(result.stdout) if e.get("event") == "device_step"]
    assert {"device": "berlin-01", "step": "talk: echoing", "pct": 50}.items() <= steps[0].items()
    journal = root / ".fleet" / "plays" / f"{_events(result.stdout)[-1]['report']['id']}.jsonl"
    assert "echoing" not in journal.read_text()


def test_block_rescue_always_handlers_ignore_errors_and_tags(lab3: Lab) -> None:
    root = lab3.project.root
    book = write_playbook(root, """\
- name: flow
  hosts: all
  vars: {k: __class__, word: many}
  tasks:
    - name: may fail
      lab.probe: {fail_on: [berlin-02]}
      ignore_errors: true
    - block:
        - {name: risky, lab.probe: {fail_on: [berlin-01]}}
        - {name: after risky, lab.echo: {value: 1}}
      rescue:
        - {name: rescuer, lab.echo: {value: 2, changed: true}, notify: fixed}
      always:
        - {name: cleanup, lab.echo: {value: 3}}
    - {name: slow one, lab.echo: {value: 4}, tags: [slow]}
    - name: sandbox at run time
      lab.echo: {value: "{{ ''[k] }}"}
      ignore_errors: true
    - name: type at run time
      lab.count: {n: "{{ word }}"}
      ignore_errors: true
  handlers:
    - {name: fixed, lab.echo: {value: 5}}
""", "flow.yaml")
    result = run_cli(root, "play", str(book), "-i", "lab", "--skip-tags", "slow", "--json")
    events = _events(result.stdout)
    assert result.exit_code == 0, result.stderr  # ignored and rescued failures: all ok
    one, two = _done(events, "berlin-01"), _done(events, "berlin-02")
    assert two["may fail"]["ignored"] and "after risky" in two and "rescuer" not in two
    assert one["risky"]["status"] == "failed" and "after risky" not in one
    assert one["rescuer"]["status"] == "changed" and one["cleanup"]["status"] == "ok"
    assert "fixed" in one and "fixed" not in two            # the handler ran where notified
    assert "slow one" not in one                             # --skip-tags
    assert "unsafe" in one["sandbox at run time"]["msg"]
    assert "must be int, not str" in one["type at run time"]["msg"]
    recap = {r["device"]: r for r in events[-1]["report"]["recap"]}
    assert recap["berlin-01"]["rescued"] == 1 and recap["berlin-01"]["failed"] == 0
    assert recap["berlin-02"]["ignored"] == 3


def test_limit_and_selectors_narrow_the_play(tmp_path: Path) -> None:
    write_inventory(tmp_path, {"berlin": 3, "munich": 2}, canary="munich-01")
    write_ops(tmp_path)
    book = write_playbook(tmp_path, "- name: p\n  hosts: all:!berlin-02\n  tasks: []\n")
    def hosts(*args: str) -> list[str]:
        result = run_cli(tmp_path, "play", str(book), "-i", "lab", "--list-hosts", "--json",
                         *args)
        assert result.exit_code == 0, result.stderr
        return list(json.loads(result.stdout)["plays"][0]["devices"])
    assert hosts() == ["berlin-01", "berlin-03", "munich-01", "munich-02"]
    assert hosts("--limit", "*-01") == ["berlin-01", "munich-01"]
    assert hosts("--site", "munich", "--limit", "all:!canary") == ["munich-02"]
    bad = run_cli(tmp_path, "play", str(book), "-i", "lab", "--limit", "tokyo")
    assert bad.exit_code == 2 and "--limit" in bad.stderr


@pytest.mark.parametrize("fatal", [False, True])
def test_any_errors_fatal_stops_at_the_first_failed_device(lab3: Lab, fatal: bool) -> None:
    root = lab3.project.root
    book = write_playbook(root, f"""\
- name: fatal
  hosts: all
  serial: [2, 1]
  any_errors_fatal: {str(fatal).lower()}
  tasks:
    - {{name: probe, lab.probe: {{fail_on: [berlin-01]}}}}
""", "fatal.yaml")
    result = run_cli(root, "play", str(book), "-i", "lab", "--json")
    assert result.exit_code == 1
    report = _events(result.stdout)[-1]["report"]
    recap = {r["device"]: r for r in report["recap"]}
    assert report["status"] == ("stopped" if fatal else "completed")
    assert recap["berlin-03"]["not_run"] is fatal


def test_a_failing_block_condition_fails_the_device(lab3: Lab) -> None:
    root = lab3.project.root
    book = write_playbook(root, """\
- name: cond
  hosts: berlin-01
  vars: {n: 0}
  tasks:
    - block:
        - {name: inner, lab.echo: {value: 1}}
      when: (1 / n) > 0
    - {name: after, lab.echo: {value: 2}}
""", "cond.yaml")
    result = run_cli(root, "play", str(book), "-i", "lab", "--json")
    assert result.exit_code == 1
    events = _events(result.stdout)
    assert not _done(events, "berlin-01")
    recap = {r["device"]: r for r in events[-1]["report"]["recap"]}
    assert recap["berlin-01"]["reason"] == "block: when: ZeroDivisionError: division by zero"


def test_a_path_argument_arrives_as_a_path(lab3: Lab) -> None:
    root = lab3.project.root
    book = write_playbook(root, """\
- name: paths
  hosts: berlin-01
  tasks:
    - {name: where, lab.where: {path: "{{ project_dir }}/fleet.yaml"}, register: w}
""", "paths.yaml")
    (root / "fleet.yaml").touch()
    result = run_cli(root, "play", str(book), "-i", "lab", "--json")
    assert result.exit_code == 0, result.stderr
    value = _done(_events(result.stdout), "berlin-01")["where"]["value"]
    assert (value["kind"], value["exists"]) == ("PosixPath", True)
