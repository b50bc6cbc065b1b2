"""A name or path that does not exist is bad input: exit 2 everywhere, one line, nothing
changed (docs/cli.md, "Exit codes")."""

from __future__ import annotations

from pathlib import Path

import pytest
from labkit import run_cli


@pytest.mark.parametrize("argv", [
    ["devices", "show", "nope"],
    ["devices", "deregister", "nope"],
    ["devices", "tag", "nope", "a=b"],
    ["cameras", "show", "nope"],
    ["cameras", "remove", "nope"],
    ["ota", "status", "nope"],
    ["ota", "abort", "nope"],
    ["lab", "fault", "nope", "offline"],
    ["lab", "reboot", "nope"],
    ["inventory", "list", "-i", "nope"],
    ["firmware", "inspect", "nope.bundle"],
    ["provision", "verify", "nope.zip"],
])
def test_not_found_exits_2_with_one_line(tmp_path: Path, argv: list[str]) -> None:
    res = run_cli(tmp_path, *argv)
    assert res.exit_code == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("error: ")
    assert "Traceback" not in res.stderr


def test_from_a_subfolder_the_lab_error_points_to_the_project(tmp_path: Path) -> None:
    # "run `fleet lab up`" there would start a second lab inside the project (runtime/.fleet).
    (tmp_path / "inventories" / "lab").mkdir(parents=True)
    (tmp_path / "inventories" / "lab" / "hosts.yaml").write_text("{}\n", encoding="utf-8")
    (tmp_path / "runtime").mkdir()
    res = run_cli(tmp_path / "runtime", "inventory", "list", "-i", "lab")
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert f"the project is {tmp_path}: cd there, or pass --project {tmp_path}" in res.stderr
    assert "fleet lab up" not in res.stderr
