"""Bad versions of a good input, for the "one line, an exit code, never a traceback" tests.

Every parser gets the same treatment: the document with values of the wrong
type at every place (seeded sample, printed so a failure can be replayed with
FLEET_FUZZ_SEED=<n>), other encodings, and truncations.
"""

from __future__ import annotations

import copy
import json
import os
import random
from collections.abc import Iterator
from typing import Any

WRONG: list[Any] = [None, 0, -1, 1.5, True, "", "x\n", [], [[1]], {}, {"a": {"b": []}}]
SEED_ENV = "FLEET_FUZZ_SEED"


def seed() -> int:
    """FLEET_FUZZ_SEED, or a fresh random seed; printed by the caller for replay."""
    return int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(1 << 30))


def _paths(doc: Any, prefix: tuple[Any, ...] = (), depth: int = 4) -> Iterator[tuple[Any, ...]]:
    if depth == 0:
        return
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) \
        else []
    for key, value in items:
        yield (*prefix, key)
        yield from _paths(value, (*prefix, key), depth - 1)


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    out = copy.deepcopy(doc)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def wrong_types(doc: Any, rng: random.Random, count: int = 60) -> list[tuple[str, Any]]:
    """(label, document): the root replaced, then `count` sampled (place, wrong value) pairs."""
    out = [(f"root={v!r}", v) for v in WRONG]
    pairs = [(p, v) for p in _paths(doc) for v in WRONG]
    for path, value in rng.sample(pairs, min(count, len(pairs))):
        out.append((f"{'/'.join(map(str, path))}={value!r}", _set(doc, path, value)))
    return out


def encodings(text: str) -> list[tuple[str, bytes]]:
    accented = text.replace("e", "\u00e9", 3)
    return [
        ("latin-1", accented.encode("latin-1", "replace")),
        ("utf-16", text.encode("utf-16")),
        ("nul", text.encode()[:10] + b"\x00" + text.encode()[10:]),
        ("binary", bytes(range(256)) * 4),
        ("empty", b""),
    ]


def truncations(data: bytes, cuts: int = 8) -> list[tuple[str, bytes]]:
    return [(f"cut@{n}", data[:n]) for n in sorted({len(data) * i // cuts for i in range(cuts)})]


def as_json(doc: Any) -> bytes:
    """JSON is YAML too, so one serialisation serves both kinds of file."""
    return json.dumps(doc, indent=1).encode()


def one_line_error(code: int, stderr: str) -> str | None:
    """None when (code, stderr) keeps the promise; else what is wrong."""
    if "Traceback" in stderr:
        return f"traceback: {stderr[-300:]!r}"
    if code not in (0, 1, 2):
        return f"exit code {code}"
    if code and len(stderr.strip().splitlines()) != 1:
        return f"exit {code} with {len(stderr.strip().splitlines())} lines: {stderr[:300]!r}"
    return None
