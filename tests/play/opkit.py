"""Calling a playbook operation directly for one lab device (no engine in between)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleet import inventory as inv
from fleet.lab import Lab
from fleet.play import operations
from fleet.play.operations import OpContext, Outcome


def call(lab: Lab, name: str, device: str | None, *, check: bool = False,
         steps: list[str] | None = None, **arguments: Any) -> Outcome:
    """Run operation `name` for `device` (None: a once-per-play operation)."""
    op = operations.find(name)
    host = None
    if device is not None:
        nr = inv.select(lab.project, inv.Selection.of("lab", limit=device))
        host = nr.inventory.hosts[device]
    progress: Callable[[str, Any], None] = (
        (lambda step, _fields: steps.append(step)) if steps is not None else (lambda *_: None))
    ctx = OpContext(lab.project, host, check=check, diff=True, progress=progress)
    try:
        return op(ctx, **arguments)
    finally:
        if host is not None:
            host.close_connections()


def device_hash(lab: Lab, device: str) -> str:
    """Every file of the device's root (slot state, slots, identity, apps), logs and run
    files left out: those change with every agent call."""
    layout = lab.layout(device)
    skip = (layout.logs, layout.run)
    digest = hashlib.sha256()
    for path in sorted(Path(layout.root).rglob("*")):
        if path.is_file() and not any(path.is_relative_to(s) for s in skip):
            digest.update(str(path.relative_to(layout.root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()
