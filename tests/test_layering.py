"""Layering rules from STYLE.md and docs/architecture.md, checked on the import statements
themselves (every import, also those inside functions).

* the runtime (``fleet_runtime``) never imports the controller or its stack;
* the domain (``fleet/`` outside ``cli/``, ``lab/`` and ``demo/``) never imports the CLI
  or the lab: the lab is an adapter that talks to the domain through data;
* nothing outside ``fleet/cli/`` imports typer or rich: rendering is the CLI's job.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNTIME_FORBIDDEN = {"fleet", "typer", "rich", "nornir", "boto3", "botocore", "paramiko"}
CLI_ONLY = {"typer", "rich"}
ADAPTERS = ("cli", "lab", "demo")  # fleet/<these>/ may import the domain, never the reverse


def imported_names(path: Path) -> set[tuple[str, int]]:
    """Every module `path` imports, by full dotted name: ``from fleet import lab`` counts as
    ``fleet.lab`` as well as ``fleet``, so a package cannot be reached through its parent."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {(a.name, node.lineno) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add((node.module, node.lineno))
            out |= {(f"{node.module}.{a.name}", node.lineno) for a in node.names}
    return out


def offenders(files: list[Path], roots: set[str], prefixes: tuple[str, ...] = (),
              base: Path = REPO) -> list[str]:
    """``file:line: imports name`` for each import of a top-level package in `roots`, or of
    a module at or under one of the dotted `prefixes`."""
    bad = []
    for f in files:
        for name, line in sorted(imported_names(f)):
            under = any(name == p or name.startswith(p + ".") for p in prefixes)
            if name.split(".")[0] in roots or under:
                bad.append(f"{f.relative_to(base)}:{line}: imports {name}")
    return bad


def domain_files(package: Path) -> list[Path]:
    return [f for f in sorted(package.rglob("*.py"))
            if f.relative_to(package).parts[0] not in ADAPTERS]


def outside_cli(package: Path) -> list[Path]:
    return [f for f in sorted(package.rglob("*.py")) if f.relative_to(package).parts[0] != "cli"]


def test_runtime_never_imports_the_controller_or_its_stack() -> None:
    files = sorted((REPO / "runtime").rglob("*.py"))
    assert files
    assert offenders(files, RUNTIME_FORBIDDEN) == []


def test_domain_never_imports_the_cli_or_the_lab() -> None:
    files = domain_files(REPO / "fleet")
    assert REPO / "fleet/ota.py" in files and REPO / "fleet/heartbeats.py" in files
    assert offenders(files, set(), ("fleet.cli", "fleet.lab", "fleet.demo")) == []


def test_domain_never_reaches_into_the_labs_directory() -> None:
    """Not by import, not by path either: `.fleet/lab/` is the lab's own business."""
    bad = [f"{f.relative_to(REPO)}: {line.strip()}" for f in domain_files(REPO / "fleet")
           for line in f.read_text().splitlines()
           if '/ "lab"' in line or ".fleet/lab" in line]
    assert bad == []


def test_the_lab_and_the_demo_never_import_the_cli() -> None:
    files = sorted((REPO / "fleet/lab").rglob("*.py")) + sorted((REPO / "fleet/demo").rglob("*.py"))
    assert files
    assert offenders(files, set(), ("fleet.cli",)) == []


def test_typer_and_rich_only_in_the_cli() -> None:
    files = outside_cli(REPO / "fleet") + sorted((REPO / "runtime").rglob("*.py"))
    assert offenders(files, CLI_ONLY) == []


def test_the_checks_catch_every_spelling_of_a_bad_import(tmp_path: Path) -> None:
    """Planted imports in a copy of the layout: each one must be reported."""
    package = tmp_path / "fleet"
    planted = {
        "ota.py": "from fleet import lab\n",
        "heartbeats.py": "def f():\n    from fleet.lab.mqtt import LabMqtt\n",
        "broker.py": "import fleet.lab.devices\n",
        "render.py": "from rich.table import Table\n",
        "rollout/engine.py": "import typer\n",
        "cli/lab.py": "import typer\nfrom fleet.lab import Lab\n",  # allowed there
        "lab/devices.py": "from fleet.project import Project\n",  # allowed there
    }
    for rel, text in planted.items():
        (package / rel).parent.mkdir(parents=True, exist_ok=True)
        (package / rel).write_text(text)
    lab = offenders(domain_files(package), set(), ("fleet.lab",), base=tmp_path)
    assert sorted({line.split(":")[0] for line in lab}) == [
        "fleet/broker.py", "fleet/heartbeats.py", "fleet/ota.py"]
    ui = offenders(outside_cli(package), CLI_ONLY, base=tmp_path)
    assert sorted({line.split(":")[0] for line in ui}) == ["fleet/render.py", "fleet/rollout/engine.py"]
    # a name that only starts like the lab is not the lab
    (package / "ota.py").write_text("import fleet.laboratory\n")
    assert offenders([package / "ota.py"], set(), ("fleet.lab",), base=tmp_path) == []


def test_no_module_guards_an_import_of_our_own_code() -> None:
    """Scaffolding from the parallel build: ``find_spec("fleet...")`` asked whether a module
    of this very package was written yet. Every one of them is now, so no guard remains."""
    bad = []
    for f in sorted((REPO / "fleet").rglob("*.py")) + sorted((REPO / "runtime").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(
                    node.func, "id", None)) == "find_spec" and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and str(node.args[0].value).split(".")[0] in ("fleet", "fleet_runtime")):
                bad.append(f"{f.relative_to(REPO)}:{node.lineno}: find_spec({node.args[0].value!r})")
    assert bad == []
