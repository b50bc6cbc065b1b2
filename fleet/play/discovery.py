"""Operations a project or a package adds: found before a playbook is checked.

* The project: every ``playbooks/operations/*.py`` of the project (files
  starting with ``_`` are helpers, not imported on their own). They are the
  operator's own code, trusted like the playbooks beside them, and imported
  under ``edgefleet_project_ops.<name>``.
* Installed packages: every entry point in the group ``edgefleet.operations``
  (its value is a module, imported for its ``@operation`` decorators).

A file or entry point that fails to import is refused with its name and the
reason (exit 2), before anything runs.

>>> discover(project)   # doctest: +SKIP
['playbooks/operations/site.py', 'entry point acme-ops']
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path

from fleet.errors import ConfigError
from fleet.project import Project

GROUP = "edgefleet.operations"
FOLDER = Path("playbooks") / "operations"
PACKAGE = "edgefleet_project_ops"


def discover(project: Project) -> list[str]:
    """Import the project's operation files and the entry points; what was loaded."""
    return [*_project_files(project), *_entry_points()]


def _project_files(project: Project) -> list[str]:
    folder = project.root / FOLDER
    loaded = []
    for path in sorted(folder.glob("*.py")) if folder.is_dir() else []:
        if path.name.startswith("_"):
            continue
        _import_file(path, f"{PACKAGE}.{path.stem}")
        loaded.append(str(path.relative_to(project.root)))
    return loaded


def _import_file(path: Path, module_name: str) -> None:
    if module_name in sys.modules and getattr(sys.modules[module_name], "__file__", None) == str(path):
        return  # one import per process: re-running the decorators would change nothing
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import operations from {path}", fix="check the file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise ConfigError(f"operations file {path} failed to import: "
                          f"{type(exc).__name__}: {exc}", fix="fix the file") from None


def _entry_points() -> list[str]:
    loaded = []
    for point in entry_points(group=GROUP):
        try:
            point.load()
        except Exception as exc:
            raise ConfigError(f"entry point {point.name!r} ({GROUP}) failed to import: "
                              f"{type(exc).__name__}: {exc}",
                              fix="fix or uninstall the package that provides it") from None
        loaded.append(f"entry point {point.name}")
    return loaded
