"""Whether a run did its job: the one-line reason a run or bench must exit non-zero.

A run "worked" unless a code node ended crash-looping, or a code node with
media outputs never put a frame out while its cameras delivered frames (it
crashed every time, or hung before its loop). A node held by PAUSE, or still
waiting for its RESUME signal, is not a failure.

>>> failure({"cameras": {}, "nodes": {}}, {})
"""

from __future__ import annotations

from typing import Any


def failure(snapshot: dict[str, Any], produced: dict[str, int | None]) -> str | None:
    """The reason the run failed, or None; ``produced``: frames out per code node
    (None for a node without media outputs)."""
    delivered = sum(c["frames_in"] for c in snapshot["cameras"].values())
    for name, node in snapshot["nodes"].items():
        error = f": {node['last_error']}" if node.get("last_error") else ""
        if node["state"] == "crash_loop":
            return f"code node {name} is crash-looping ({node['restarts']} restarts){error}"
        if node["state"] == "paused" or produced.get(name) is None:
            continue
        if delivered and produced[name] == 0:
            return (
                f"code node {name} never put out a frame while the cameras delivered"
                f" {delivered}{error or ' (no error raised: is it stuck before its loop?)'}"
            )
    return None


def produced_by(runner: Any) -> dict[str, int | None]:
    """Frames out per code node of a Runner (None where the node has no media output)."""
    return {
        s.code.name: s.context.frames_out if s.code.media_outputs else None
        for s in runner.supervisors
    }
