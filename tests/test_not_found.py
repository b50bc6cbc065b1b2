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
