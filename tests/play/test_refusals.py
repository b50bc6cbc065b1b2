"""Bad playbooks are refused before anything runs: one line naming file:line, exit 2, no run.

The inventory is a static one whose devices do not exist: a refusal must come before any
connection, and no play journal may be written.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from labkit import run_cli
from playkit import write_inventory, write_ops, write_playbook

HEAD = "- name: p\n  hosts: all\n  tasks:\n"
CASES = [
    # (what, task lines (6-space indented tasks under HEAD), line, words in the message)
    ("unknown operation", "    - name: t\n      lab.nope: {}\n", 4, "unknown operation 'lab.nope'"),
    ("unknown argument", "    - name: t\n      lab.note: {text: a, colour: red}\n", 5,
     "unknown argument 'colour'"),
    ("missing argument", "    - name: t\n      lab.note: {count: 2}\n", 5, "needs argument 'text'"),
    ("wrong type", "    - name: t\n      lab.note:\n        text: a\n        count: many\n", 7,
     "'count' of lab.note must be int, not str"),
    ("undefined variable", "    - name: t\n      lab.note: {text: '{{ nobody }}'}\n", 5,
     "undefined variable 'nobody'"),
    ("python internals", "    - name: t\n      lab.note: {text: \"{{ ''.__class__.__mro__ }}\"}\n",
     5, "reaches Python internals"),
    ("filesystem", "    - name: t\n      lab.note: {text: \"{% include '/etc/passwd' %}\"}\n", 5,
     "reaches files"),
    ("filesystem lookup", "    - name: t\n      lab.note: {text: \"{{ lookup('file', '/etc/passwd') }}\"}\n",
     5, "undefined variable 'lookup'"),
    ("undefined in when", "    - name: t\n      lab.note: {text: a}\n      when: ghost == 1\n", 6,
     "undefined variable 'ghost'"),
    ("registered too late", "    - name: t\n      lab.note: {text: '{{ later.text }}'}\n"
     "    - name: u\n      lab.note: {text: a}\n      register: later\n", 5,
     "undefined variable 'later'"),
    ("two operations", "    - name: t\n      lab.note: {text: a}\n      lab.probe: {}\n", 4,
     "exactly one operation"),
    ("notify without handler", "    - name: t\n      lab.note: {text: a}\n      notify: nope\n", 6,
     "notify names no handler 'nope'"),
    ("schema: unknown play key", "    - name: t\n      lab.note: {text: a}\n  forks: 3\n", 6,
     "Additional properties are not allowed"),
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_inventory(tmp_path, {"berlin": 2, "munich": 2}, canary="berlin-01")
    write_ops(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("what", "tasks", "line", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_playbook_is_refused_with_file_and_line(root: Path, what: str, tasks: str,
                                                    line: int, words: str) -> None:
    book = write_playbook(root, HEAD + tasks)
    result = run_cli(root, "play", str(book), "-i", "lab")
    assert result.exit_code == 2, result.stderr
    assert f"{book}:{line}:" in result.stderr, result.stderr
    assert words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (root / ".fleet" / "plays").exists() or not list((root / ".fleet" / "plays").glob("*.jsonl"))


def test_bad_host_pattern_is_refused_with_its_line(root: Path) -> None:
    book = write_playbook(root, "- name: p\n  hosts: berlin:!tokyo\n  tasks: []\n")
    result = run_cli(root, "play", str(book), "-i", "lab")
    assert result.exit_code == 2
    assert f"{book}:2:" in result.stderr and "'tokyo' names no device" in result.stderr


def test_template_reaching_internals_in_play_vars_is_refused(root: Path) -> None:
    book = write_playbook(root, "- name: p\n  hosts: all\n  vars:\n"
                                "    x: \"{{ ''['__class__'] }}\"\n  tasks: []\n")
    result = run_cli(root, "play", str(book), "-i", "lab")
    assert result.exit_code == 2
    assert f"{book}:4:" in result.stderr and "reaches Python internals" in result.stderr


def test_defined_names_pass(root: Path) -> None:
    """Inventory layers, play vars, vars_files, registered and -e names are all known."""
    (root / "playbooks" / "more.yaml").parent.mkdir(parents=True, exist_ok=True)
    (root / "playbooks" / "more.yaml").write_text("from_file: 1\n")
    book = write_playbook(root, "- name: p\n  hosts: all\n  vars: {v: 1}\n"
                                "  vars_files: [more.yaml]\n  tasks:\n"
                                "    - name: a\n      lab.note: {text: x}\n      register: r\n"
                                "    - name: b\n      lab.note:\n        text: \"{{ owner }}"
                                "{{ city }}{{ site }}{{ v }}{{ from_file }}{{ r.text }}{{ cli }}"
                                "{{ inventory_hostname }}{{ maybe | default('') }}\"\n")
    result = run_cli(root, "play", str(book), "-i", "lab", "-e", "cli=1", "--list-tasks")
    assert result.exit_code == 0, result.stderr
    assert "a  [lab.note]" in result.stdout and "b  [lab.note]" in result.stdout
