"""The test run shows where it is (one line per module) and `make test-fast` leaves out
tests that start servers (tests/areas.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_each_module_announces_itself_and_server_tests_can_be_left_out(tmp_path: Path) -> None:
    (tmp_path / "test_one.py").write_text("def test_a():\n    pass\n")
    (tmp_path / "test_two.py").write_text(
        "import pytest\n\n@pytest.fixture\ndef lab():\n    return 1\n\n"
        "def test_b(lab):\n    pass\n\ndef test_c():\n    pass\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "areas", "-p", "no:cacheprovider",
         "-m", "not servers", str(tmp_path)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(TESTS)},
        capture_output=True, text=True, check=False, timeout=300,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "[1/2] test_one.py\n" in out
    assert "[2/2] test_two.py (previous module " in out
    assert "2 passed, 1 deselected" in out  # test_b uses a lab: marked `servers`


def test_make_test_fast_starts_no_lab_and_no_crash_marathon(tmp_path: Path) -> None:
    # The Makefile's own marker expression, on modules whose labs come from a helper,
    # and on a crash_full test (pyproject deselects those, unless -m is given again).
    (tmp_path / "test_marathon.py").write_text(
        "import pytest\n\n@pytest.mark.crash_full\ndef test_fifty_kills():\n    pass\n")
    makefile = (TESTS.parent / "Makefile").read_text(encoding="utf-8")
    found = re.search(r'^test-fast:.*?-m "([^"]+)"', makefile, re.M | re.S)
    assert found, "test-fast in the Makefile has no -m expression"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "-m", found.group(1), "tests/rollout/test_rollout_crash.py",
         "tests/rollout/test_update.py", "tests/test_json_output.py::test_json_output_of_every_command",
         str(tmp_path / "test_marathon.py")],
        cwd=TESTS.parent, capture_output=True, text=True, check=False, timeout=300,
    )
    assert "::" not in proc.stdout, proc.stdout  # every test there starts a lab
