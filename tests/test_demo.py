"""`fleet demo` end to end (what `make demo` runs), and its refusal to touch a real project."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.demo import MARKER, prepare_project
from fleet.errors import FleetError

REPO = Path(__file__).resolve().parents[1]


def test_demo_refuses_to_delete_a_directory_it_did_not_create(tmp_path: Path) -> None:
    precious = tmp_path / "demo-fleet"
    precious.mkdir()
    (precious / "certs").mkdir()
    with pytest.raises(FleetError, match="not an edgefleet demo project"):
        prepare_project(REPO, precious)
    assert (precious / "certs").exists()


def test_demo_runs_end_to_end_twice_in_a_row(tmp_path: Path) -> None:
    for part in ("firmware", "inventories/example"):
        shutil.copytree(REPO / part, tmp_path / part)
    argv = [sys.executable, "-m", "fleet.cli.main", "--project", str(tmp_path), "--no-color", "demo"]
    said = ""
    try:
        # The second run starts from scratch (its project and lab are made again), so a
        # person can run the demo twice; it runs only the first step: CI's time limit.
        for only in ([], ["--only", "Bring up"]):
            proc = subprocess.run([*argv, *only], capture_output=True, text=True, timeout=600,
                                  env={"PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/bin",
                                       "COLUMNS": "120", "HOME": str(tmp_path)})
            said += proc.stderr + proc.stdout
            assert proc.returncode == 0, proc.stderr[-3000:]
            assert "Demo complete" in proc.stderr
            assert (tmp_path / "demo-fleet" / MARKER).exists()
    finally:
        subprocess.run([*argv[:-1], "--project", str(tmp_path / "demo-fleet"), "lab", "down"],
                       capture_output=True)
    assert "Traceback" not in said
