"""Helpers for the device application tests: a real agent in a subprocess, apps sent as blobs.

``agent(root, ...)`` runs ``fleet-agent`` with ``FLEET_ROOT=root`` and returns
(exit code, the JSON answer). ``send_app`` puts every file of an application
directory into the device's blob store through ``blobs have`` / ``blobs put``
(only the missing ones, as the controller will) and writes the release manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

AGENT = [sys.executable, "-m", "fleet_runtime.agent.cli"]
SKIP = {".gitignore", "build_model.py", "__pycache__"}


def agent(root: Path, *argv: str, stdin: bytes | None = None, env: dict[str, str] | None = None,
          timeout: float = 300) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run([*AGENT, *argv], input=stdin or b"", capture_output=True,
                          env={**os.environ, "FLEET_ROOT": str(root), **(env or {})},
                          timeout=timeout, check=False)
    try:
        doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except ValueError:
        doc = {"raw": proc.stdout.decode(), "stderr": proc.stderr.decode()[-2000:]}
    return proc.returncode, doc


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def release_of(app: Path, name: str, version: str, **extra: Any) -> dict[str, Any]:
    files = []
    for path in sorted(p for p in app.rglob("*") if p.is_file()):
        rel = path.relative_to(app)
        if SKIP & set(rel.parts):
            continue
        data = path.read_bytes()
        files.append({"path": rel.as_posix(), "sha256": sha256(data), "size": len(data)})
    return {"name": name, "version": version, "files": files, **extra}


def send_app(root: Path, app: Path, name: str, version: str, dest: Path,
             **extra: Any) -> Path:
    """Send the blobs the device lacks, then write the manifest under `dest`; its path."""
    release = release_of(app, name, version, **extra)
    by_sha = {f["sha256"]: app / f["path"] for f in release["files"]}
    code, have = agent(root, "blobs", "have", *by_sha)
    assert code == 0, have
    for sha in have["missing"]:
        data = by_sha[sha].read_bytes()
        code, doc = agent(root, "blobs", "put", sha, "--size", str(len(data)), stdin=data)
        assert code == 0, doc
    manifest = dest / f"{name}-{version}.json"
    manifest.write_text(json.dumps(release))
    return manifest


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 120.0) -> Any:
    """Poll `probe` until it returns something true (the event itself, not a guess)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def app_status(root: Path, name: str) -> dict[str, Any]:
    code, doc = agent(root, "app", "list")
    assert code == 0, doc
    return next(a for a in doc["apps"] if a["name"] == name)
