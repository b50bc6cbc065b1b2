"""The playbook format: a YAML list of plays, read once with line numbers and schema-checked.

`load` reads the file with ruamel (positions kept), validates it against
PLAYBOOK_SCHEMA (errors ``file:line: $.path: message``) and builds plain
dataclasses: `Playbook` → `Play` → `Step`. A step is one operation call or a
``block`` with optional ``rescue``/``always``. What needs the operations and
the inventory (argument types, host patterns, template names) is checked by
``validate.py``, also before anything runs.

>>> book = load(Path("playbooks/incident.yaml"))   # doctest: +SKIP
>>> book.plays[0].steps[0].operation
'health.check'
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.errors import ConfigError
from fleet.rollout.policy import POLICY_SCHEMA
from fleet.schema import line_of, load_yaml, plain, schema_errors

_SERIAL_ITEM = POLICY_SCHEMA["properties"]["batches"]["items"]
TASK_KEYS = ("name", "when", "register", "tags", "notify", "ignore_errors",
             "block", "rescue", "always")
_NAME = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*\Z"}
_STRINGS = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
_TASK: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "when": {"anyOf": [{"type": "string"}, {"type": "boolean"},
                           {"type": "array", "items": {"type": ["string", "boolean"]}}]},
        "register": _NAME,
        "tags": _STRINGS,
        "notify": _STRINGS,
        "ignore_errors": {"type": "boolean"},
        "block": {"type": "array", "items": {"$ref": "#/$defs/task"}},
        "rescue": {"type": "array", "items": {"$ref": "#/$defs/task"}},
        "always": {"type": "array", "items": {"$ref": "#/$defs/task"}},
    },
    "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_.-]*\Z"},
}
PLAYBOOK_SCHEMA: dict[str, Any] = {
    "$defs": {"task": _TASK},
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "hosts"],
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "hosts": {"type": "string", "minLength": 1},
            "serial": {"anyOf": [_SERIAL_ITEM, {"type": "array", "minItems": 1,
                                                "items": _SERIAL_ITEM}]},
            "max_fail_percentage": {"type": "number", "minimum": 0, "maximum": 100},
            "any_errors_fatal": {"type": "boolean"},
            "vars": {"type": "object", "propertyNames": _NAME},
            "vars_files": {"type": "array", "items": {"type": "string", "minLength": 1}},
            "tasks": {"type": "array", "items": {"$ref": "#/$defs/task"}},
            "handlers": {"type": "array", "items": {"$ref": "#/$defs/task"}},
        },
    },
}


class PlaybookError(ConfigError):
    """A bad playbook: refused before anything runs (exit 2)."""


@dataclass(frozen=True)
class Step:
    """One task: an operation call, or a block of steps with rescue/always."""

    id: str                       # "2", "2.block.0", "h1": stable across runs (journal key)
    name: str
    line: int
    path: tuple[Any, ...]         # JSON path in the file
    operation: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    when: tuple[Any, ...] = ()
    register: str = ""
    tags: frozenset[str] = frozenset()
    notify: tuple[str, ...] = ()
    ignore_errors: bool = False
    block: tuple[Step, ...] = ()
    rescue: tuple[Step, ...] = ()
    always: tuple[Step, ...] = ()

    @property
    def is_block(self) -> bool:
        return not self.operation

    def walk(self) -> Iterator[Step]:
        """This step and every step inside it, in file order."""
        yield self
        for child in (*self.block, *self.rescue, *self.always):
            yield from child.walk()


@dataclass(frozen=True)
class Play:
    index: int
    name: str
    hosts: str
    line: int
    serial: tuple[int | str, ...] = ("100%",)
    max_fail_percentage: float | None = None
    any_errors_fatal: bool = False
    vars: dict[str, Any] = field(default_factory=dict)
    vars_files: tuple[str, ...] = ()
    steps: tuple[Step, ...] = ()
    handlers: tuple[Step, ...] = ()

    def operations(self) -> Iterator[Step]:
        for step in (*self.steps, *self.handlers):
            yield from (s for s in step.walk() if not s.is_block)


@dataclass(frozen=True)
class Playbook:
    path: Path
    plays: tuple[Play, ...]
    doc: Any = field(repr=False, compare=False, default=None)  # ruamel tree, for line numbers

    def where(self, path: list[Any] | tuple[Any, ...]) -> str:
        line = line_of(self.doc, list(path))
        return f"{self.path}:{line}" if line else str(self.path)


def load(path: Path) -> Playbook:
    """Read and schema-check `path`; PlaybookError names file:line and the key path."""
    doc = load_yaml(path)
    problems = schema_errors(doc, PLAYBOOK_SCHEMA, path) if doc is not None else [
        f"{path}: the playbook is empty"]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise PlaybookError(problems[0] + more, fix="correct the playbook and run again")
    book = Playbook(path, (), doc)
    plays = tuple(_play(book, index, plain(raw)) for index, raw in enumerate(doc))
    return Playbook(path, plays, doc)


def _play(book: Playbook, index: int, raw: dict[str, Any]) -> Play:
    serial = raw.get("serial", "100%")
    return Play(
        index=index, name=raw["name"], hosts=raw["hosts"], line=_line(book, [index]),
        serial=tuple(serial) if isinstance(serial, list) else (serial,),
        max_fail_percentage=raw.get("max_fail_percentage"),
        any_errors_fatal=bool(raw.get("any_errors_fatal", False)),
        vars=dict(raw.get("vars") or {}), vars_files=tuple(raw.get("vars_files") or ()),
        steps=_steps(book, raw.get("tasks") or [], [index, "tasks"], ""),
        handlers=_steps(book, raw.get("handlers") or [], [index, "handlers"], "h"),
    )


def _line(book: Playbook, path: list[Any]) -> int:
    return line_of(book.doc, path) or 0


def _steps(book: Playbook, raws: list[dict[str, Any]], path: list[Any], prefix: str
           ) -> tuple[Step, ...]:
    return tuple(_step(book, raw, [*path, i], f"{prefix}{i}") for i, raw in enumerate(raws))


def _step(book: Playbook, raw: dict[str, Any], path: list[Any], sid: str) -> Step:
    ops = [k for k in raw if k not in TASK_KEYS]
    has_block = "block" in raw
    if has_block and ops or not has_block and len(ops) != 1:
        what = ("a block names no operation" if has_block else
                "a task names exactly one operation" if ops else "a task names no operation")
        found = f" (found {', '.join(ops)})" if ops else ""
        raise PlaybookError(f"{book.where(path)}: {_json(path)}: {what}{found}",
                            fix="write e.g. `- name: check\\n  health.check: {}`")
    for key in ("rescue", "always"):
        if key in raw and not has_block:
            raise PlaybookError(f"{book.where([*path, key])}: {_json(path)}: {key} needs a block",
                                fix="put the tasks under `block:`")
    args = raw[ops[0]] if ops else {}
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise PlaybookError(f"{book.where([*path, ops[0]])}: {_json([*path, ops[0]])}: the "
                            "arguments of an operation are a mapping",
                            fix=f"write `{ops[0]}: {{name: value}}`")
    when = raw.get("when", ())
    return Step(
        id=sid, name=raw.get("name") or (ops[0] if ops else "block"), line=_line(book, path),
        path=tuple(path), operation=ops[0] if ops else "", args=args,
        when=tuple(when) if isinstance(when, list) else (when,) if when != () else (),
        register=raw.get("register", ""), tags=frozenset(_strings(raw.get("tags"))),
        notify=tuple(_strings(raw.get("notify"))), ignore_errors=bool(raw.get("ignore_errors")),
        block=_steps(book, raw.get("block") or [], [*path, "block"], f"{sid}.b"),
        rescue=_steps(book, raw.get("rescue") or [], [*path, "rescue"], f"{sid}.r"),
        always=_steps(book, raw.get("always") or [], [*path, "always"], f"{sid}.a"),
    )


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _json(path: list[Any]) -> str:
    from fleet.schema import json_path

    return json_path(path)
