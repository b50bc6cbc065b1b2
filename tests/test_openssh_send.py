"""fleet.openssh.send_file: the file is spliced into the command's stdin a pipe-full at a
time, progress comes after each, an exception from progress hangs up, a deadline holds.
Run against local commands (cat, sleep): the SSH side is tests/test_transfer_stream.py."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from fleet.openssh import PIPE_BYTES, send_file


def test_the_whole_file_arrives_from_its_offset_with_progress(tmp_path: Path) -> None:
    data = os.urandom(3 * PIPE_BYTES + 12345)
    src = tmp_path / "blob"
    src.write_bytes(data)
    seen: list[int] = []
    with src.open("rb") as fh:
        fh.seek(1000)  # a resume sends the rest
        rc, out, err = send_file(["cat"], fh, time.monotonic() + 120, seen.append)
    assert (rc, err) == (0, b"") and out == data[1000:]
    assert seen == sorted(seen) and seen[-1] == len(data) and len(seen) >= 4


class Stop(Exception):
    pass


def test_an_exception_from_progress_hangs_up(tmp_path: Path) -> None:
    src = tmp_path / "blob"
    src.write_bytes(os.urandom(8 * PIPE_BYTES))
    got = tmp_path / "got"

    def stop_after_first(offset: int) -> None:
        raise Stop(offset)

    with src.open("rb") as fh, pytest.raises(Stop):
        send_file(["sh", "-c", f"cat > {got}"], fh, time.monotonic() + 120, stop_after_first)
    # killed: whatever it wrote before is short of the file
    assert not got.exists() or got.stat().st_size < src.stat().st_size


def test_a_command_that_stops_reading_runs_into_the_deadline(tmp_path: Path) -> None:
    src = tmp_path / "blob"
    src.write_bytes(b"x" * (8 * PIPE_BYTES))  # more than the pipe holds
    with src.open("rb") as fh, pytest.raises(subprocess.TimeoutExpired):
        send_file(["sleep", "600"], fh, time.monotonic() + 1, None)


def test_a_command_that_exits_early_gives_its_own_status(tmp_path: Path) -> None:
    src = tmp_path / "blob"
    src.write_bytes(b"x" * (4 * PIPE_BYTES))
    with src.open("rb") as fh:
        rc, _out, err = send_file(["sh", "-c", "echo no >&2; exit 3"], fh,
                                  time.monotonic() + 120, None)
    assert rc == 3 and err == b"no\n"
