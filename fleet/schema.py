"""YAML loading with jsonschema validation whose errors name file, line and JSON path.

>>> load_yaml_validated(Path("fleet.yaml"), {"type": "object"})  # doctest: +SKIP
{}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer, ComposerError, MaxDepthExceededError
from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.reader import ReaderError

from fleet.errors import ConfigError
from fleet.textfiles import MAX_YAML_BYTES as MAX_YAML_BYTES
from fleet.textfiles import read_text_capped as read_text_capped

MAX_YAML_DEPTH = 64


def plain(node: Any) -> Any:
    """ruamel's round-trip containers -> plain dict/list (keeps validation simple)."""
    if isinstance(node, dict):
        return {str(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    return node


def _line_of(doc: Any, path: list[Any]) -> int | None:
    """1-based line of the deepest node on `path` that ruamel kept position info for."""
    line, node = None, doc
    for key in path:
        lc = getattr(node, "lc", None)
        try:
            if lc is not None:
                line = (lc.key(key) if isinstance(node, dict) else lc.item(key))[0] + 1
            node = node[key]
        except (KeyError, IndexError, TypeError):
            break
    return line


def line_of(doc: Any, path: list[Any]) -> int | None:
    """1-based line of `path` in a document read by `load_yaml` (None when unknown)."""
    return _line_of(doc, path)


def json_path(path: list[Any]) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


class _NoAliasComposer(Composer):
    """Refuses ``*alias`` nodes: a few of them nested expand to billions of values."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.parser.check_event(AliasEvent):
            event = self.parser.peek_event()
            raise ComposerError(None, None, f"alias *{event.anchor} is not allowed; write the value out",
                                event.start_mark)
        return super().compose_node(parent, index)


def load_yaml(path: Path) -> Any:
    """One YAML document, read the one safe way: size capped, UTF-8, no aliases, bounded depth."""
    return load_yaml_text(read_text_capped(path), path)


def load_yaml_text(text: str, path: Path) -> Any:
    """`load_yaml` for text already read (capped) from `path`; errors name `path` and line."""
    yaml = YAML(typ="rt")
    yaml.Composer = _NoAliasComposer
    yaml.max_depth = MAX_YAML_DEPTH
    try:
        return yaml.load(text)
    except (RecursionError, MaxDepthExceededError) as exc:
        raise ConfigError(f"{path} is nested deeper than {MAX_YAML_DEPTH} levels",
                          fix="flatten the document") from exc
    except ReaderError as exc:  # a control character; its own message spans two lines
        raise ConfigError(f"invalid YAML: character {exc.character!r} is not allowed "
                          f"(offset {exc.position})", where=str(path),
                          fix="remove it, or quote it as an escape") from exc
    except (ValueError, KeyError, OverflowError) as exc:
        # ruamel's constructors raise these on a scalar they cannot build: a date
        # that does not exist (2026-13-01), an int past Python's 4300-digit limit,
        # `!!int xyz` or `!!bool maybe`.
        raise ConfigError(f"invalid YAML value: {' '.join(str(exc).split())[:200]}",
                          where=str(path), fix="quote the value, or correct it") from exc
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"invalid YAML: {problem}", where=where, fix="fix the syntax") from exc


def schema_errors(doc: Any, schema: dict[str, Any], path: Path) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    out = []
    for err in sorted(validator.iter_errors(plain(doc)), key=lambda e: list(map(str, e.path))):
        where = list(err.absolute_path)
        line = _line_of(doc, where + _unexpected_key(err))
        loc = f"{path}:{line}" if line else str(path)
        out.append(f"{loc}: {json_path(where)}: {err.message}")
    return out


def _unexpected_key(err: jsonschema.ValidationError) -> list[Any]:
    """For an unknown key, point at the key's own line rather than its parent's."""
    if err.validator != "additionalProperties" or not isinstance(err.instance, dict):
        return []
    known = set(err.schema.get("properties", {})) if isinstance(err.schema, dict) else set()
    extra = [k for k in err.instance if k not in known]
    return extra[:1]


def load_yaml_validated(path: Path, schema: dict[str, Any], *, empty_ok: bool = False) -> Any:
    doc = load_yaml(path)
    if doc is None and empty_ok:
        return {}
    errors = schema_errors(doc, schema, path)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(errors[0] + more, fix="correct the file and run again")
    return plain(doc)
