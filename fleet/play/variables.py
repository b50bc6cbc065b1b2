"""Playbook variables and their precedence, lowest first:

1. inventory defaults (``defaults.yaml`` ``data:``)
2. groups (a parent group before its children; ``site-*`` groups included)
3. the host (``hosts.yaml`` ``data:``: site, tags, hardware, ...)
4. play ``vars:``
5. play ``vars_files:`` (in the order listed)
6. registered results (``register:``) of earlier tasks on the same device
7. extra vars (``-e name=value``, ``-e @file.yaml``), in the order given

Always defined as well: ``inventory_hostname`` (the device; absent for a
once-per-play task), ``group_names``, ``playbook_dir`` and ``project_dir``.
String values of layers 4-5 may themselves be templates over lower layers.

>>> layered({"a": 1, "b": 1}, {"b": 2})
{'a': 1, 'b': 2}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fleet.errors import UsageError
from fleet.schema import load_yaml, plain

MAGIC = ("inventory_hostname", "group_names", "playbook_dir", "project_dir")


def layered(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win, key by key."""
    out: dict[str, Any] = {}
    for layer in layers:
        out.update(layer)
    return out


def host_layers(host: Any) -> dict[str, Any]:
    """Layers 1-3 for a Nornir host, plus its magic names."""
    groups = list(getattr(host, "extended_groups", list)())
    out = layered(dict(host.defaults.data), *(dict(g.data) for g in reversed(groups)),
                  dict(host.data))
    out["inventory_hostname"] = host.name
    out["group_names"] = sorted(g.name for g in groups)
    return out


def extra_vars(items: Iterable[str], base: Path) -> dict[str, Any]:
    """``-e name=value`` (a string) and ``-e @file.yaml`` (a mapping), later ones winning."""
    out: dict[str, Any] = {}
    for item in items:
        if item.startswith("@"):
            out.update(_mapping_file(Path(item[1:]) if Path(item[1:]).is_absolute()
                                     else Path.cwd() / item[1:], f"-e {item}"))
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise UsageError(f"-e {item!r}: expected name=value or @file.yaml",
                             fix="write e.g. -e version=1.1.0")
        out[name] = value
    return out


def vars_file(path: str, playbook: Path) -> dict[str, Any]:
    """A ``vars_files`` entry, relative to the playbook's folder."""
    full = Path(path) if Path(path).is_absolute() else playbook.parent / path
    return _mapping_file(full, f"vars_files {path}")


def _mapping_file(path: Path, what: str) -> dict[str, Any]:
    doc = load_yaml(path)
    if doc is None:
        return {}
    if not isinstance(doc, dict) or not all(isinstance(k, str) and k.isidentifier()
                                            for k in doc):
        raise UsageError(f"{what}: {path} is not a mapping of variable names to values",
                         fix="write `name: value` lines")
    values: dict[str, Any] = plain(doc)
    return values


def registered_value(changed: bool, failed: bool, skipped: bool, msg: str,
                     data: Mapping[str, Any]) -> dict[str, Any]:
    """What ``register: r`` stores: the operation's data plus r.changed/failed/skipped/msg."""
    return {**dict(data), "changed": changed, "failed": failed, "skipped": skipped, "msg": msg}
