"""Everything about a playbook that can be checked before a device is touched.

Each task's operation exists; its arguments are the operation's parameters
(none unknown, none missing) with the declared types (literal values now,
templated ones once rendered); every template parses, stays in the sandbox and
names only variables that will be defined (registered names only after the
task that registers them); ``notify`` names a handler; ``hosts`` is a pattern
that names something in the inventory. The first problem is raised as a
PlaybookError naming file:line and the key path.

>>> conforms([1, 2], list[int]), conforms(True, int), conforms(3, float)
(True, False, True)
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence, Set
from typing import Any

from fleet.play import operations as ops
from fleet.play import patterns, templating
from fleet.play.playbook import Play, Playbook, PlaybookError, Step
from fleet.schema import json_path


def conforms(value: Any, annotation: Any) -> bool:
    """Is `value` (plain YAML/JSON data) of the type `annotation`?"""
    if annotation is Any or annotation is typing.Any:
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (list, tuple, Sequence) or annotation in (list, tuple):
        return isinstance(value, list) and all(conforms(v, args[0]) for v in value) if args \
            else isinstance(value, list)
    if origin in (dict, Mapping) or annotation in (dict,):
        return isinstance(value, dict) and (not args or all(
            conforms(k, args[0]) and conforms(v, args[1]) for k, v in value.items()))
    if typing.get_origin(annotation) is typing.Literal:
        return value in args
    if isinstance(annotation, type):
        return isinstance(value, annotation) or (annotation.__name__ == "Path"
                                                 and isinstance(value, str))
    return True


def type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def check_arguments(op: ops.Operation, args: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(argument, problem) pairs; templated values are checked after rendering."""
    found = [(name, f"unknown argument {name!r} of {op.name} (it takes: "
              f"{', '.join(op.params) or 'no arguments'})")
             for name in args if name not in op.params]
    found += [("", f"{op.name} needs argument {name!r}")
              for name, p in op.params.items() if p.required and name not in args]
    for name, value in args.items():
        param = op.params.get(name)
        if param is None or _has_template(value):
            continue
        if not conforms(value, param.annotation):
            found.append((name, f"argument {name!r} of {op.name} must be "
                                f"{type_name(param.annotation)}, not {type(value).__name__} "
                                f"({value!r})"))
    return found


def _has_template(value: Any) -> bool:
    return any(True for _ in templating.template_strings(value))


def check(book: Playbook, targets: Sequence[patterns.Target], inventory_names: Set[str],
          extra: Set[str], vars_files: Mapping[int, Mapping[str, Any]]) -> None:
    """Raise PlaybookError on the first problem (see the module docstring)."""
    registered: set[str] = set()
    for play in book.plays:
        _check_hosts(book, play, targets)
        known = {*inventory_names, *extra, *templating_magic(), *play.vars,
                 *vars_files.get(play.index, {})}
        for key, value in play.vars.items():
            _check_templates(book, [play.index, "vars", key], value, known)
        handlers = {h.name for h in play.handlers}
        for step in play.steps:
            _check_step(book, step, known, registered, handlers)
        for step in play.handlers:
            _check_step(book, step, known, registered, handlers)


def templating_magic() -> tuple[str, ...]:
    from fleet.play.variables import MAGIC

    return MAGIC


def _check_hosts(book: Playbook, play: Play, targets: Sequence[patterns.Target]) -> None:
    try:
        patterns.select(play.hosts, targets)
    except patterns.PatternError as exc:
        raise PlaybookError(f"{book.where([play.index, 'hosts'])}: "
                            f"{json_path([play.index, 'hosts'])}: {exc.what}", fix=exc.fix) from None


def _check_step(book: Playbook, step: Step, known: set[str], registered: set[str],
                handlers: Set[str]) -> None:
    names = known | registered
    for index, expr in enumerate(step.when):
        if isinstance(expr, str):
            _refuse(book, [*step.path, "when", *([index] if len(step.when) > 1 else [])],
                    templating.problems(expr, names, expression=True))
    for name in step.notify:
        if name not in handlers:
            _raise(book, [*step.path, "notify"], f"notify names no handler {name!r}",
                   f"handlers of this play: {', '.join(sorted(handlers)) or 'none'}")
    if step.is_block:
        for child in (*step.block, *step.rescue, *step.always):
            _check_step(book, child, known, registered, handlers)
    else:
        _check_operation(book, step, names)
    if step.register:
        registered.add(step.register)


def _check_operation(book: Playbook, step: Step, names: Set[str]) -> None:
    try:
        op = ops.find(step.operation)
    except ops.UnknownOperation as exc:
        raise PlaybookError(f"{book.where(step.path)}: {json_path(list(step.path))}: {exc.what}",
                            fix=exc.fix) from None
    for arg, problem in check_arguments(op, step.args):
        path = [*step.path, step.operation, *([arg] if arg else [])]
        _raise(book, path, problem, f"see `{step.operation}` in docs/playbooks.md")
    _check_templates(book, [*step.path, step.operation], step.args, names)


def _check_templates(book: Playbook, path: list[Any], value: Any, names: Set[str]) -> None:
    for inner, text in templating.template_strings(value):
        _refuse(book, [*path, *inner], templating.problems(text, names))


def _refuse(book: Playbook, path: list[Any], problems: list[str]) -> None:
    if problems:
        _raise(book, path, problems[0], "templates may use defined variables and filters only; "
               "no files, no attributes starting with _")


def _raise(book: Playbook, path: list[Any], what: str, fix: str) -> None:
    raise PlaybookError(f"{book.where(path)}: {json_path(path)}: {what}", fix=fix)
