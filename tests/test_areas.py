"""The test run shows where it is (one line per module) and `make test-fast` leaves out
tests that start servers (tests/areas.py)."""

from __future__ import annotations

import os
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
