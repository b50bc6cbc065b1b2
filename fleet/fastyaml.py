"""A fast, conservative YAML reader for large, plain documents (inventories).

libyaml (PyYAML's C parser) composes the node tree; a small builder here turns
it into plain dicts, lists and scalars with YAML 1.2 meaning, the same values
ruamel's loaders give. Whatever the builder is not certain to read exactly as
ruamel would (an alias, a merge key, a timestamp, an octal, a duplicate key, a
tag, nesting past the depth limit, a syntax error) makes `load_plain` return
``(False, None)``: the caller then reads the file the careful way (`fleet.schema.load_yaml`),
which refuses it or builds it with line numbers, so errors read as before.

>>> load_plain("a: 1\\nb: [x, true]\\n")
(True, {'a': 1, 'b': ['x', True]})
>>> load_plain("a: &x 1\\nb: *x\\n")
(False, None)
"""

from __future__ import annotations

import re
from typing import Any

_TAG = "tag:yaml.org,2002:"
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
# Only the plainest spellings; "012", "0x1F", "1_000", ".inf" go the careful way.
_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\Z")
_FLOAT = re.compile(r"[-+]?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?\Z")


class _Unsure(Exception):
    """The document uses something only the careful loader reads exactly."""


def _loader_class() -> Any:
    import yaml
    from ruamel.yaml.resolver import implicit_resolvers

    class Loader(yaml.CBaseLoader):  # type: ignore[misc,name-defined]
        # ruamel's YAML 1.2 table, so "yes", "on" and "no" stay strings as they do there.
        yaml_implicit_resolvers: dict[Any, list[Any]] = {}

    for versions, tag, regexp, first in implicit_resolvers:
        if (1, 2) in versions:
            Loader.add_implicit_resolver(tag, regexp, first)
    return Loader


_LOADER: Any = None


def available() -> bool:
    """True when PyYAML was built with libyaml (otherwise every read is the careful one)."""
    try:
        import yaml
    except ImportError:
        return False
    return bool(getattr(yaml, "__with_libyaml__", False))


def load_plain(text: str, max_depth: int = 64) -> tuple[bool, Any]:
    """``(True, document)`` as plain data, or ``(False, None)``: read it the careful way."""
    global _LOADER
    if not available():
        return False, None
    if _LOADER is None:
        _LOADER = _loader_class()
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        return True, None if node is None else _Builder(max_depth).build(node, 1)
    except (_Unsure, RecursionError):
        return False, None
    except Exception:  # noqa: BLE001 - any libyaml complaint: the careful loader words it
        return False, None
    finally:
        loader.dispose()


class _Builder:
    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self.seen: set[int] = set()

    def build(self, node: Any, depth: int) -> Any:
        if id(node) in self.seen:
            raise _Unsure("alias")  # libyaml hands an alias back as the same node
        self.seen.add(id(node))
        value, tag = node.value, node.tag
        if isinstance(value, str):
            return _scalar(tag, value)
        if depth > self.max_depth:
            raise _Unsure("depth")
        if tag == _TAG + "seq":
            return [self.build(item, depth + 1) for item in value]
        if tag != _TAG + "map":
            raise _Unsure(tag)
        out: dict[str, Any] = {}
        for key_node, item in value:
            key = self.build(key_node, depth + 1)
            if not isinstance(key, str) or key in out:
                raise _Unsure("key")
            out[key] = self.build(item, depth + 1)
        return out


def _scalar(tag: str, value: str) -> Any:
    if tag == _TAG + "str":
        return value
    if tag == _TAG + "null" and value in _NULLS:
        return None
    if tag == _TAG + "bool" and value in _BOOLS:
        return _BOOLS[value]
    if tag == _TAG + "int" and _INT.match(value):
        return int(value)
    if tag == _TAG + "float" and _FLOAT.match(value):
        return float(value)
    raise _Unsure(tag)
