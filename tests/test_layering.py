"""Layering rules from STYLE.md, checked on the import statements themselves."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNTIME_FORBIDDEN = {"fleet", "typer", "rich", "nornir", "boto3", "botocore", "paramiko"}
DOMAIN_FORBIDDEN = {"typer"}


def imported_roots(path: Path) -> set[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {(a.name, node.lineno) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add((node.module, node.lineno))
    return out


def offenders(files: list[Path], forbidden: set[str], also: tuple[str, ...] = ()) -> list[str]:
    bad = []
    for f in files:
        for name, line in imported_roots(f):
            if name.split(".")[0] in forbidden or name.startswith(also):
                bad.append(f"{f.relative_to(REPO)}:{line}: imports {name}")
    return bad


def test_runtime_never_imports_the_controller_or_its_stack() -> None:
    files = sorted((REPO / "runtime").rglob("*.py"))
    assert files
    assert offenders(files, RUNTIME_FORBIDDEN) == []


def test_domain_never_imports_the_cli() -> None:
    files = [f for f in sorted((REPO / "fleet").rglob("*.py")) if "cli" not in f.parts
             and f.name != "render.py"]
    assert offenders(files, DOMAIN_FORBIDDEN, also=("fleet.cli",)) == []
