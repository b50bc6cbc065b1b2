"""``json.dumps(obj, indent=2, sort_keys=True, default=str)``, byte for byte, about 3x faster.

With ``indent`` set, the standard library falls back to its pure-Python
encoder, a tower of generators: for a 10,000-device ``--json`` listing that
costs more than reading the inventory. This writer walks plain data once into
a list of strings, using the C string escaper; anything it is not sure to
write exactly as ``json.dumps`` would (a non-string key, a cycle, an unusual
float) hands the whole object to ``json.dumps``.

>>> dumps({"b": [1, 2.5, None], "a": {"x": True}})
'{\\n  "a": {\\n    "x": true\\n  },\\n  "b": [\\n    1,\\n    2.5,\\n    null\\n  ]\\n}'
"""

from __future__ import annotations

import json
import math
from json.encoder import encode_basestring_ascii as _quote  # type: ignore[attr-defined]
from typing import Any


class _Unsure(Exception):
    pass


def dumps(obj: Any) -> str:
    """What ``json.dumps(obj, indent=2, sort_keys=True, default=str)`` returns."""
    parts: list[str] = []
    try:
        _write(obj, parts, "\n", 0)
    except (_Unsure, RecursionError):
        return json.dumps(obj, indent=2, sort_keys=True, default=str)
    return "".join(parts)


def _write(obj: Any, out: list[str], newline: str, depth: int) -> None:
    if depth > 200:
        raise _Unsure  # deep or cyclic: json.dumps words the error
    if isinstance(obj, str):
        out.append(_quote(obj))
    elif obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, int):
        out.append(int.__repr__(obj))
    elif isinstance(obj, float):
        if not math.isfinite(obj):
            raise _Unsure
        out.append(float.__repr__(obj))
    elif isinstance(obj, (list, tuple)):
        _write_list(obj, out, newline, depth)
    elif isinstance(obj, dict):
        _write_dict(obj, out, newline, depth)
    else:
        out.append(_quote(str(obj)))  # default=str


def _write_list(items: list[Any] | tuple[Any, ...], out: list[str], newline: str,
                depth: int) -> None:
    if not items:
        out.append("[]")
        return
    inner = newline + "  "
    out.append("[")
    first = True
    for item in items:
        out.append(inner if first else "," + inner)
        first = False
        _write(item, out, inner, depth + 1)
    out.append(newline + "]")


def _write_dict(mapping: dict[Any, Any], out: list[str], newline: str, depth: int) -> None:
    if not mapping:
        out.append("{}")
        return
    if not all(type(k) is str for k in mapping):
        raise _Unsure
    inner = newline + "  "
    out.append("{")
    first = True
    for key in sorted(mapping):
        out.append((inner if first else "," + inner) + _quote(key) + ": ")
        first = False
        _write(mapping[key], out, inner, depth + 1)
    out.append(newline + "}")
