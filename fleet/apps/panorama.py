"""`fleet app import-panorama`: a panorama-cli project made an application directory.

The runtime already reads panorama-cli's layout (packages named
``<account>-<NAME>-<version>``, descriptors and assets beside ``package.json``
or in ``assets/`` by SHA-256, a Dockerfile's ``COPY src /panorama``), so the
import changes little, and says what it changed:

* the container images ``build-container`` left in ``assets/`` are dropped:
  edgefleet runs the code folder the Dockerfile copies, not the image;
* the project's override document (``overrides.json`` / ``override.json`` at
  the top or beside the graph) becomes ``graphs/<name>/override.json``, the
  application's deployment defaults, after it is checked against the graph;
* caches and VCS folders stay behind; a link or special file is refused.

The copy is made beside the destination and renamed into place only when it
validates and would build, so a refused import leaves nothing.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet_runtime import durable
from fleet_runtime.manifest import Problem
from fleet_runtime.manifest.application import ManifestError, graph_path

from fleet.apps.build import OVERRIDE, SKIPPED, AppInvalid, collect, is_container_image
from fleet.errors import UsageError
from fleet.project import Project

OVERRIDE_NAMES = ("override.json", "overrides.json")


@dataclass
class ImportReport:
    name: str
    dest: Path
    files: int = 0
    dropped: list[str] = field(default_factory=list)
    override: str | None = None
    override_source: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "dest": str(self.dest), "files": self.files,
                "dropped": self.dropped, "override": self.override, "notes": self.notes}


def _source_graph(src: Path) -> Path:
    try:
        return graph_path(src)
    except ManifestError as exc:
        raise UsageError(f"not a panorama-cli project: {exc}", where=str(src),
                         fix="give the folder that holds graphs/<app>/graph.json") from None


def _find_override(src: Path, graph_dir: Path) -> Path | None:
    for folder in (graph_dir, src):
        for name in OVERRIDE_NAMES:
            if (folder / name).is_file():
                return folder / name
    return None


def _copy_tree(src: Path, folder: Path, stage: Path, report: ImportReport,
               problems: list[Problem]) -> None:
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(src)
        if any(part in SKIPPED for part in rel.parts) or path.suffix == ".pyc":
            continue
        mode = path.lstat().st_mode
        if stat.S_ISDIR(mode):
            continue
        if not stat.S_ISREG(mode):
            problems.append(Problem(rel.as_posix(), "$", "a link or special file; copy the "
                                    "target into the project"))
        elif rel.parts[0] == "assets" and is_container_image(path):
            report.dropped.append(rel.as_posix())
        elif not (rel.parent == Path("graphs") / report.name and rel.name in OVERRIDE_NAMES):
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, stage / rel, follow_symlinks=False)
            report.files += 1


def _stage(src: Path, stage: Path, report: ImportReport) -> list[Problem]:
    gpath = _source_graph(src)
    problems: list[Problem] = []
    for folder in (gpath.parent, src / "packages", src / "assets"):
        if folder.is_dir():
            _copy_tree(src, folder, stage, report, problems)
    override = _find_override(src, gpath.parent)
    if override is not None:
        target = stage / "graphs" / report.name / OVERRIDE
        shutil.copyfile(override, target)
        report.override = target.relative_to(stage).as_posix()
        report.override_source = override.relative_to(src).as_posix()
    return problems


def _as_in_source(problems: list[Problem], report: ImportReport) -> list[Problem]:
    """Problems of the moved override named by the file the user has."""
    return [Problem(report.override_source, p.path, p.message)
            if report.override_source and p.file == report.override else p for p in problems]


def import_project(project: Project, src: Path, out: Path | None = None) -> ImportReport:
    """Copy a panorama-cli project into an application directory; refuse it whole or not at all."""
    src = src.resolve()
    if not src.is_dir():
        raise UsageError(f"no panorama-cli project at {src}", fix="give the project folder")
    name = _source_graph(src).parent.name
    dest = (out or project.root / "apps-src" / name).resolve()
    if dest.exists():
        raise UsageError(f"{dest} already exists", fix="remove it, or give another --out")
    dest.parent.mkdir(parents=True, exist_ok=True)
    report = ImportReport(name, dest)
    stage = Path(tempfile.mkdtemp(prefix=f".{name}.import-", dir=dest.parent))
    try:
        problems = _stage(src, stage, report)
        found = collect(stage)
        problems += _as_in_source(found.problems, report)
        if problems:
            raise AppInvalid(src, sorted(set(problems)))
        durable.replace(stage, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    report.notes = _notes(report)
    return report


def _notes(report: ImportReport) -> list[str]:
    notes = [f"{report.files} file(s) copied"]
    notes += [f"dropped {p}: a container image from `panorama-cli build-container`; edgefleet "
              "runs the code folder its Dockerfile copies" for p in report.dropped]
    if report.override:
        notes.append(f"deployment defaults (cameras, parameters) kept in {report.override}")
    notes.append(f"next: `fleet app build {report.dest}`")
    return notes
