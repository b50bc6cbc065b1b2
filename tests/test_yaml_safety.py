"""Every YAML file the controller reads goes through one loader: no aliases, capped size, UTF-8.

The alias-bomb cases run the real `fleet` command in a subprocess with a
generous timeout: before the fix they ran until killed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from labkit import RELEASE_PASS, keyed_project, run_cli

from fleet.errors import ConfigError
from fleet.project import Project
from fleet.rollout.policy import load_policy
from fleet.schema import MAX_YAML_BYTES, load_yaml

FLEET = str(Path(sys.executable).parent / "fleet")
PASS = RELEASE_PASS


def alias_bomb(levels: int = 10) -> str:
    """Ten levels of nine aliases each: 9**10 strings once expanded (the billion laughs)."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


@pytest.fixture
def fw_project(tmp_path: Path) -> Project:
    return keyed_project(tmp_path)


def fleet(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FLEET, "--project", str(project), "--no-color", *args],
                          capture_output=True, text=True, timeout=60, cwd=project,
                          env={**os.environ, **PASS, "COLUMNS": "200"})


# which file gets the bomb, and the command that reads it
BOMB_CASES = {
    "hosts-list": ("inventories/example/hosts.yaml", ["inventory", "list", "-i", "example"]),
    "hosts-check": ("inventories/example/hosts.yaml", ["inventory", "check", "-i", "example"]),
    "groups-check": ("inventories/example/groups.yaml", ["inventory", "check", "-i", "example"]),
    "recipe": ("firmware/bomb.yaml", ["firmware", "build", "firmware/bomb.yaml"]),
    "fleet.yaml": ("fleet.yaml", ["inventory", "list", "-i", "example"]),
}


@pytest.mark.parametrize("case", sorted(BOMB_CASES))
def test_alias_bomb_is_refused_in_one_line(fw_project: Project, case: str) -> None:
    rel, args = BOMB_CASES[case]
    (fw_project.root / rel).write_text(alias_bomb())
    res = fleet(fw_project.root, *args)
    lines = res.stderr.strip().splitlines()
    assert res.returncode in (1, 2) and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert any("alias *l0 is not allowed" in line for line in lines), res.stderr
    if case != "hosts-check" and case != "groups-check":  # check lists every problem, one a line
        assert len(lines) == 1 and res.returncode == 2, res.stderr


def test_policy_file_alias_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("base: &b {max_failures: 1}\nother: *b\n")
    with pytest.raises(ConfigError, match=r"alias \*b is not allowed.*policy.yaml:2"):
        load_policy(path)


def test_anchors_without_aliases_still_load(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("a: &x 1\nb: 2\n")
    assert load_yaml(path) == {"a": 1, "b": 2}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"name: caf\xe9\n", "is not UTF-8 text"),
        (b"\xff\xfe" + "a: 1\n".encode("utf-16-le"), "is not UTF-8 text"),
        (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested deeper than 64 levels"),
        (b"# " + b"x" * MAX_YAML_BYTES + b"\n", f"larger than {MAX_YAML_BYTES} bytes"),
        (b"a: 1\x00\n", "invalid YAML"),
    ],
    ids=["latin-1", "utf-16", "deep", "oversize", "nul"],
)
def test_fleet_yaml_that_cannot_be_read_is_one_line_and_exit_2(
        tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "fleet.yaml").write_bytes(content)
    res = run_cli(tmp_path, "inventory", "list")
    assert res.exit_code == 2
    assert message in res.stderr and "fleet.yaml" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_a_fifo_in_place_of_an_inventory_file_does_not_block(fw_project: Project) -> None:
    groups = fw_project.inventories / "example/groups.yaml"
    groups.unlink()
    os.mkfifo(groups)
    res = fleet(fw_project.root, "inventory", "list", "-i", "example")
    assert res.returncode == 2 and "is not a regular file" in res.stderr, res.stderr


@pytest.mark.parametrize(
    "value",
    ["2026-13-45", "!!int xyz", "!!bool maybe", "1" * 5000],
    ids=["no-such-date", "int-tag", "bool-tag", "long-int"],
)
def test_a_value_yaml_cannot_build_is_one_line_and_exit_2(tmp_path: Path, value: str) -> None:
    # ruamel raises ValueError or KeyError, not a YAMLError, for these: a traceback before.
    (tmp_path / "fleet.yaml").write_text(f"install_by: {value}\n")
    res = run_cli(tmp_path, "inventory", "list")
    assert res.exit_code == 2, res.stderr
    assert "invalid YAML value" in res.stderr and "fleet.yaml" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_a_policy_file_with_a_date_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("max_failures: 1\nnot_before: 2026-02-30\n")
    with pytest.raises(ConfigError, match=r"invalid YAML value: day is out of range"):
        load_policy(path)
