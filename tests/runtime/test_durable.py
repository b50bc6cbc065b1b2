"""The durable-file toolkit: atomic writes, file locks, backoff waits.

The crash test takes its seed from EDGEFLEET_CRASH_SEED (a random one otherwise, printed).
"""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from fleet_runtime import durable


def test_atomic_write_replaces_the_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    durable.atomic_write_json(target, {"a": 1})
    durable.atomic_write_json(target, {"b": 2})
    assert target.read_text() == '{\n  "b": 2\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp left behind


def test_a_crash_between_temp_write_and_rename_leaves_the_old_file(tmp_path: Path) -> None:
    seed = int(os.environ.get("EDGEFLEET_CRASH_SEED", random.randrange(1 << 30)))
    print(f"EDGEFLEET_CRASH_SEED={seed}")
    size = random.Random(seed).randrange(1, 1 << 20)
    target = tmp_path / "key.pem"
    target.write_bytes(b"old content")
    # The writer dies by SIGKILL at the rename: the new data is written and fsync'd, not named.
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from fleet_runtime import durable
        os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
        durable.atomic_write(Path({str(target)!r}), b"n" * {size}, 0o600)
    """)
    proc = subprocess.run([sys.executable, "-c", script], check=False)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"old content"
    leftovers = [p for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".key.pem.")
    assert leftovers[0].stat().st_size == size  # it did get as far as the rename


def test_an_error_before_the_rename_keeps_the_old_file_and_removes_the_temp(
    tmp_path: Path,
) -> None:
    target = tmp_path / "pins"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), durable.atomic_file(target, 0o600) as fh:
        fh.write(b"half")
        raise RuntimeError("disk went away")
    assert target.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [target]


def test_the_mode_is_set_before_the_name_appears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "release.key"
    seen: list[tuple[int, bool, int]] = []
    real_replace = os.replace

    def checking_replace(src: str, dst: Path) -> None:
        seen.append((stat.S_IMODE(os.stat(src).st_mode), Path(dst).exists(), os.stat(src).st_size))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", checking_replace)
    old_umask = os.umask(0)  # a permissive umask must not widen a private file
    try:
        durable.atomic_write_text(target, "secret\n", 0o600)
    finally:
        os.umask(old_umask)
    assert seen == [(0o600, False, 7)]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_the_temp_name_is_unique_per_writer(tmp_path: Path) -> None:
    target = tmp_path / "shared.json"
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for _ in range(20):
                durable.atomic_write_json(target, {"writer": n})
        except BaseException as exc:  # collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert durable.json.loads(target.read_text())["writer"] in range(4)


def test_exclusive_publish_refuses_an_existing_name(tmp_path: Path) -> None:
    target = tmp_path / "token"
    durable.atomic_write(target, b"first", 0o600, exclusive=True)
    with pytest.raises(FileExistsError):
        durable.atomic_write(target, b"second", 0o600, exclusive=True)
    assert target.read_bytes() == b"first"
    assert list(tmp_path.iterdir()) == [target]


def test_a_lock_held_elsewhere_times_out_with_the_file_named(tmp_path: Path) -> None:
    lock = tmp_path / "install.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from pathlib import Path
            from fleet_runtime import durable
            with durable.file_lock(Path({str(lock)!r})):
                print("held", flush=True)
                sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert durable.is_locked(lock)
        with pytest.raises(durable.LockTimeout, match=f"{lock} is locked by another process"):
            durable.acquire_lock(lock, timeout=0.2)
        with pytest.raises(durable.LockTimeout):
            durable.acquire_lock(lock, shared=True, timeout=0)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    assert not durable.is_locked(lock)
    with durable.file_lock(lock, timeout=0):  # the holder is gone: free at once
        pass


def test_shared_locks_coexist(tmp_path: Path) -> None:
    lock = tmp_path / "slots.lock"
    with durable.file_lock(lock, shared=True), durable.file_lock(lock, shared=True, timeout=0):
        assert not durable.is_locked(lock)


def test_backoff_grows_to_the_cap_with_bounded_jitter() -> None:
    backoff = durable.Backoff(threading.Event(), first=1.0, cap=30.0, jitter=0.1,
                              rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    for got, base in zip(delays, [1, 2, 4, 8, 16, 30, 30, 30], strict=True):
        assert base <= got <= base * 1.1
    backoff.reset()
    assert backoff.next_delay() <= 1.1
    assert durable.backoff_delay(3, 0.05, 1.0) == pytest.approx(0.2)


def test_backoff_stops_waiting_when_the_event_is_set() -> None:
    stop = threading.Event()
    backoff = durable.Backoff(stop, first=3600.0, cap=3600.0)  # would wait an hour
    waiting, returned = threading.Event(), []
    thread = threading.Thread(
        target=lambda: returned.append(backoff.wait(note=lambda _: waiting.set())))
    thread.start()
    assert waiting.wait(30)
    stop.set()
    thread.join(60)
    assert not thread.is_alive()
    assert returned == [True]  # it says it was stopped, not that the hour passed


def test_a_second_install_is_told_busy_while_one_holds_the_lock(tmp_path: Path) -> None:
    from fleet_runtime.agent.ota import install_lock
    from fleet_runtime.agent.protocol import AgentError
    from fleet_runtime.layout import Layout

    layout = Layout(tmp_path)
    with (
        install_lock(layout, True, 0),
        pytest.raises(AgentError, match="another install is running"),
        install_lock(layout, False, 0.1),
    ):
        pass
    with install_lock(layout, False, 0), install_lock(layout, False, 0):
        pass  # readers share it


def test_without_chmod_the_file_is_made_as_open_makes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FAT drive refuses chmod (EPERM): the log export and archive copy never call it."""

    def fat_fchmod(fd: int, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchmod", fat_fchmod)
    old_umask = os.umask(0o022)
    try:
        durable.atomic_write(tmp_path / "bundle.tar.gz", b"logs", 0o666, chmod=False)
        durable.atomic_write(tmp_path / "archive.zip", b"zip", 0o600, chmod=False)
        with pytest.raises(PermissionError):
            durable.atomic_write(tmp_path / "other", b"x", 0o644)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "bundle.tar.gz").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "archive.zip").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archive.zip", "bundle.tar.gz"]
