"""`--json` output is exactly what json.dumps(indent=2, sort_keys=True, default=str) wrote (#19)."""

from __future__ import annotations

import datetime
import enum
import json
from typing import Any

import pytest

from fleet.jsonout import dumps


class Level(enum.IntEnum):
    HIGH = 3


def _cycle() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


CASES: list[Any] = [
    {}, [], "", 0, None, (1, "two"), {"a": [], "b": {}},
    {"é": "ü\n\"\t\x00", "b": [True, False, None, 1.0, -0.0, 1e300, 10**30, Level.HIGH]},
    {"when": datetime.date(2026, 12, 2), "path": object.__name__},
    {"devices": [{"name": f"dev-{i}", "port": 22, "groups": ["site-a"],
                  "data": {"tags": ["canary"], "site": "a"}} for i in range(3)]},
    {1: "non-string key"}, {"x": float("nan")}, {"x": float("-inf")},
    [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
]


@pytest.mark.parametrize("obj", CASES)
def test_same_text_as_json_dumps(obj: Any) -> None:
    assert dumps(obj) == json.dumps(obj, indent=2, sort_keys=True, default=str)


def test_a_cycle_is_refused_as_json_dumps_refuses_it() -> None:
    with pytest.raises(ValueError, match="Circular reference"):
        dumps(_cycle())
