"""`fleet-agent checksum PATH`: SHA-256 of a file on the device (upload verification)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fleet_runtime.agent.protocol import AgentError
from fleet_runtime.layout import Layout


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("checksum", help="SHA-256 of a file")
    p.add_argument("path")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    path = Path(args.path)
    if not path.is_file():
        raise AgentError("not-found", f"no such file: {path}")
    from fleet_runtime.bundle import sha256_file  # the one file hash both halves use

    return {"path": str(path), "size": path.stat().st_size, "sha256": sha256_file(path)}
