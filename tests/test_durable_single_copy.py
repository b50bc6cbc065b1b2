"""One atomic write, one file lock, one backoff: `fleet_runtime/durable.py` holds each.

The scan reads the syntax tree of every module in ``fleet/`` and ``runtime/``: a rename over
a name, a hard link into place, a temp file made by hand, an ``flock`` or a delay that grows
by doubling anywhere else fails the test, unless it is one of the documented exceptions below.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOLKIT = Path("runtime/fleet_runtime/durable.py")
SOURCES = sorted((REPO / "fleet").rglob("*.py")) + sorted((REPO / "runtime").rglob("*.py"))

# Where the idea is not "write a file durably": (file, what) -> why it stays.
EXCEPTIONS = {
    # An application's console log rotates file.1 -> file.2 ...; losing a rotation on power
    # loss loses nothing the app needs, and it rotates on every run.
    ("runtime/fleet_runtime/panoramasdk/console.py", "rename"): "log rotation",
    # Bundle payload files are created exclusively in a fresh staging tree (never through a
    # link, never over a file an archive named twice); the tree is renamed into place whole.
    ("runtime/fleet_runtime/bundle.py", "exclusive create"): "payload extraction",
    # An app version's files are hard links to blobs already fsync'd in the store, made in a
    # fresh build directory that is renamed into place whole (durable.replace).
    ("runtime/fleet_runtime/apps/versions.py", "rename"): "hard links into the blob store",
}

RENAMES = {"replace", "rename", "link"}
LOCKS = {"flock", "lockf"}
TEMPS = {"mkstemp", "mktemp", "NamedTemporaryFile"}


def _call_name(node: ast.Call) -> tuple[str, str] | None:
    func = node.func
    if not isinstance(func, ast.Attribute):
        return None
    owner = func.value.id if isinstance(func.value, ast.Name) else ""
    return owner, func.attr


def _kind(node: ast.Call) -> str | None:
    name = _call_name(node)
    if name is None:
        return None
    owner, attr = name
    if attr in RENAMES and (owner == "os" or (len(node.args) == 1 and owner != "dataclasses")):
        return "rename"
    if attr in LOCKS and owner == "fcntl":
        return "lock"
    if attr in TEMPS and owner == "tempfile":
        return "temp file"
    return None  # str.replace takes two arguments, Path.replace one


def _doubles(node: ast.AST) -> bool:
    """``min(x * 2, cap)`` or ``min(a * f ** n, cap)``: a delay that grows to a cap."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "min":
        return any(_is_doubling(arg) for arg in node.args)
    return False


def _is_doubling(node: ast.AST) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.Pow) and not (
                isinstance(sub.left, ast.Constant) and isinstance(sub.right, ast.Constant)):
            return True  # a growing power; ``10**6`` is only a constant
        if isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.Mult) and any(
                isinstance(side, ast.Constant) and side.value == 2 for side in (sub.left, sub.right)):
            return True
    return False


def _exclusive(node: ast.AST) -> bool:
    """``os.O_EXCL``: a file created by hand, the way a temp or lock file is made."""
    return (isinstance(node, ast.Attribute) and node.attr == "O_EXCL"
            and isinstance(node.value, ast.Name) and node.value.id == "os")


def kinds_in(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        kind = _kind(node) if isinstance(node, ast.Call) else None
        if kind is None and _doubles(node):
            kind = "backoff"
        if kind is None and _exclusive(node):
            kind = "exclusive create"
        if kind:
            out.append((getattr(node, "lineno", 0), kind))
    return out


def findings() -> list[str]:
    found = []
    for path in SOURCES:
        rel = path.relative_to(REPO)
        if rel == TOOLKIT:
            continue
        for line, kind in kinds_in(ast.parse(path.read_text(), filename=str(path))):
            if (str(rel), kind) not in EXCEPTIONS:
                found.append(f"{rel}:{line}: {kind}")
    return found


def test_only_the_toolkit_renames_locks_or_backs_off() -> None:
    assert findings() == []


def test_the_toolkit_has_each_one_once() -> None:
    kinds = [kind for _, kind in kinds_in(ast.parse((REPO / TOOLKIT).read_text()))]
    assert kinds.count("exclusive create") == 1  # _create_temp, for atomic_file
    assert kinds.count("rename") == 3  # os.link and os.replace in _publish, and replace()
    assert kinds.count("lock") == 2  # blocking and polling flock, in _flock
    assert kinds.count("backoff") == 1  # backoff_delay
