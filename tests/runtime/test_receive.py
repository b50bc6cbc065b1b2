"""`fleet-agent receive`: stdin into PATH.part, hashed as it arrives (#19).

With the sender's hash (``--expect``) the device renames a matching ``.part`` into
place itself (the controller's rename round trip is saved); a mismatch, or a stream
cut short, leaves the ``.part`` where it was and PATH absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from fleet_runtime.layout import Layout

DATA = os.urandom(3 * 1024 * 1024 + 7)
SHA = hashlib.sha256(DATA).hexdigest()


def receive(layout: Layout, *args: str, data: bytes = DATA) -> dict:  # type: ignore[type-arg]
    layout.staging.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "fleet_runtime.agent.cli", "receive", *args],
                          input=data, env={**os.environ, "FLEET_ROOT": str(layout.root)},
                          capture_output=True, timeout=60)
    return dict(json.loads(proc.stdout.decode().splitlines()[-1]))


def test_a_matching_upload_is_placed_by_the_device(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "dev")
    path = layout.staging / "b.bundle"
    answer = receive(layout, str(path), "--expect", SHA)
    assert (answer["sha256"], answer["placed"]) == (SHA, True)
    assert path.read_bytes() == DATA and not Path(f"{path}.part").exists()


def test_a_mismatch_or_a_short_stream_stays_a_part_file(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "dev")
    path = layout.staging / "b.bundle"
    answer = receive(layout, str(path), "--expect", SHA, data=DATA[:-1])  # cut short
    assert answer["placed"] is False and not path.exists()
    assert Path(f"{path}.part").read_bytes() == DATA[:-1]
    tampered = DATA[:100] + b"x" + DATA[101:]
    answer = receive(layout, str(path), "--expect", SHA, data=tampered)
    assert answer["placed"] is False and not path.exists()
    resumed = receive(layout, str(path), "--offset", "100", "--expect", SHA, data=DATA[100:])
    assert resumed["placed"] is True and path.read_bytes() == DATA  # kept bytes hashed again
