"""Jinja2 for playbooks: sandboxed, strict, and checked before anything runs.

Templates render in an ``ImmutableSandboxedEnvironment`` with ``StrictUndefined``
and no loader: an undefined name is an error, not an empty string; attributes
starting with ``_`` (``''.__class__.__mro__``) and mutating methods are
refused by the sandbox; ``include``/``import``/``extends`` have nothing to read
files with. `problems` finds the same things statically, at load time, so a
bad playbook is refused before it touches a device.

>>> problems("{{ ''.__class__ }}", {"x"})
["reaches Python internals ('__class__')"]
>>> render("{{ n + 1 }}", {"n": 1})
2
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Set
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Names a template may use without a definition: Jinja2's own globals.
_FILE_NODES = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)
_GUARDS = {"defined", "undefined"}  # `x is defined` asks; it may name the undefined
_DEFAULTS = {"default", "d"}        # `x | default(1)` too

ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                    keep_trailing_newline=True)


class TemplateFailure(Exception):
    """A template that could not render: the reason, one line."""


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value or "{#" in value)


def problems(text: str, known: Set[str], *, expression: bool = False) -> list[str]:
    """What is wrong with a template (or a bare `when` expression) before it runs."""
    source = "{{ (" + text + ") }}" if expression else text
    try:
        tree = ENV.parse(source)
    except TemplateError as exc:
        return [f"template syntax: {exc.message or exc}"]
    found: list[str] = []
    for node in tree.find_all(_FILE_NODES):
        found.append(f"reaches files ({type(node).__name__.lower()} is not allowed)")
    for name in _private_names(tree):
        found.append(f"reaches Python internals ({name!r})")
    missing = sorted(_free_names(tree) - set(known) - set(ENV.globals))
    found.extend(f"undefined variable {name!r}" for name in missing)
    return found


def _private_names(tree: nodes.Node) -> Iterator[str]:
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        key = node.attr if isinstance(node, nodes.Getattr) else _const(getattr(node, "arg", None))
        if isinstance(key, str) and key.startswith("_"):
            yield key


def _const(node: nodes.Node | None) -> Any:
    return node.value if isinstance(node, nodes.Const) else None


def _free_names(tree: nodes.Node) -> set[str]:
    """Names loaded from the context, except those only asked about (defined, default)."""
    stored = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    guarded = {id(t.node) for t in tree.find_all(nodes.Test) if t.name in _GUARDS}
    guarded |= {id(f.node) for f in tree.find_all(nodes.Filter) if f.name in _DEFAULTS}
    return {n.name for n in tree.find_all(nodes.Name)
            if n.ctx == "load" and id(n) not in guarded and n.name not in stored}


def render(text: str, context: Mapping[str, Any]) -> Any:
    """Render `text`; a string that is one ``{{ expression }}`` keeps its value's type."""
    try:
        inner = _single_expression(text)
        if inner is not None:
            return _defined(ENV.compile_expression(inner, undefined_to_none=False)(**context))
        return ENV.from_string(text).render(**context)
    except TemplateError as exc:
        raise TemplateFailure(_reason(exc)) from None


def evaluate(expression: str, context: Mapping[str, Any]) -> Any:
    """A bare expression (``when:``)."""
    try:
        return _defined(ENV.compile_expression(expression, undefined_to_none=False)(**context))
    except TemplateError as exc:
        raise TemplateFailure(_reason(exc)) from None


def _defined(value: Any) -> Any:
    """An expression's value with no Undefined left inside (StrictUndefined raises on str)."""
    if isinstance(value, Undefined):
        str(value)  # raises UndefinedError or the sandbox's SecurityError, with the reason
    elif isinstance(value, (list, tuple)):
        for item in value:
            _defined(item)
    elif isinstance(value, dict):
        for item in value.values():
            _defined(item)
    return value


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every template inside lists and mappings."""
    if is_template(value):
        return render(value, context)
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    if isinstance(value, dict):
        return {k: render_value(v, context) for k, v in value.items()}
    return value


def _single_expression(text: str) -> str | None:
    stripped = text.strip()
    if not (stripped.startswith("{{") and stripped.endswith("}}")):
        return None
    inner = stripped[2:-2]
    return None if ("{{" in inner or "}}" in inner or "{%" in inner) else inner


def _reason(exc: TemplateError) -> str:
    return " ".join(str(exc.message or exc).split())[:300]


def template_strings(value: Any) -> Iterator[tuple[list[Any], str]]:
    """Every template string inside `value`, with its path (for line numbers)."""
    if is_template(value):
        yield [], value
    elif isinstance(value, list):
        for index, item in enumerate(value):
            for path, text in template_strings(item):
                yield [index, *path], text
    elif isinstance(value, dict):
        for key, item in value.items():
            for path, text in template_strings(item):
                yield [key, *path], text
