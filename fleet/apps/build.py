"""Build an application directory into a signed bundle; validation first, every problem at once.

What goes in: the graph's folder (``graphs/<name>/``), every package folder
the graph names, every program package (a ``packages/<dir>/program.yml``),
and ``assets/`` when present. Caches (``__pycache__``, ``*.pyc``, ``.git``)
stay out; a link or special file is a problem, as in OTA bundles.

>>> built = build(project, Path("apps-src/face_blur"), version="1.2.0",
...               passphrase=b"correct horse")                            # doctest: +SKIP
>>> built.path.name                                                      # doctest: +SKIP
'face_blur-1.2.0.app'
"""

from __future__ import annotations

import json
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fleet_runtime
from fleet_runtime import bundle, platforms
from fleet_runtime.appbundle import SUFFIX, AppManifest, AppPackage, parse_app_manifest
from fleet_runtime.bundle import BundleError, FileEntry
from fleet_runtime.durable import atomic_file
from fleet_runtime.manifest import Problem, load_application, validate_application
from fleet_runtime.manifest.application import BUILTIN_PACKAGES, ManifestError, graph_path

from fleet import firmware
from fleet.errors import ConfigError, UsageError
from fleet.project import Project

SKIPPED = ("__pycache__", ".git", ".DS_Store")
PROGRAM = "program.yml"
OVERRIDE = "override.json"  # beside graph.json: the application's deployment defaults
MAX_IMAGE_MANIFEST = 1 << 20


class AppInvalid(ConfigError):
    """The application does not validate; ``problems`` lists every one (file, JSON path)."""

    def __init__(self, root: Path, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the application", where=str(root),
                         fix="correct each one listed and build again")


@dataclass
class Collected:
    """An application directory read for bundling: its files and what is wrong with it."""

    root: Path
    sources: dict[str, Path] = field(default_factory=dict)  # bundle path -> local file
    packages: list[AppPackage] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def problem(self, file: str, path: str, message: str) -> None:
        self.problems.append(Problem(file, path, message))


def apps_dir(project: Project) -> Path:
    """Where built bundles live: ``apps/`` next to ``firmware/``."""
    return project.root / "apps"


def _add_tree(found: Collected, folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(found.root).as_posix()
        if any(part in SKIPPED for part in path.relative_to(found.root).parts) or \
                path.suffix == ".pyc":
            continue
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            found.problem(rel, "$", "a link or special file; bundles carry regular files only "
                          "(copy the target in)")
        elif stat.S_ISREG(mode):
            found.sources[rel] = path


def is_container_image(path: Path) -> bool:
    """Whether `path` is a ``docker save`` archive (what ``build-container`` puts in assets/)."""
    if not path.name.endswith((".tar.gz", ".tar")):
        return False
    try:
        with tarfile.open(path, "r:*") as tar:
            member = tar.getmember("manifest.json")
            handle = tar.extractfile(member) if member.size <= MAX_IMAGE_MANIFEST else None
            doc = json.loads(handle.read()) if handle else None
    except (tarfile.TarError, KeyError, ValueError, OSError, EOFError):
        return False
    return isinstance(doc, list) and all(isinstance(d, dict) and "Config" in d for d in doc)


def _graph_packages(found: Collected, gpath: Path) -> list[tuple[str, str, str]]:
    """(folder, name, version) of each package the graph names, built-ins left out."""
    try:
        refs = json.loads(gpath.read_text())["nodeGraph"]["packages"]
        pairs = [(str(r["name"]), str(r["version"])) for r in refs]
    except (OSError, ValueError, KeyError, TypeError):
        return []  # validation reports the graph itself
    out = []
    for name, version in pairs:
        if name not in BUILTIN_PACKAGES:
            account, _, short = name.partition("::")
            out.append((f"packages/{account}-{short}-{version}", name, version))
    return out


def _program(found: Collected, folder: Path) -> AppPackage | None:
    """A program package's record from its program.yml (BIE: ``entry`` relative to it)."""
    from fleet.schema import load_yaml

    rel = folder.relative_to(found.root).as_posix()
    where = f"{rel}/{PROGRAM}"
    try:
        doc = load_yaml(folder / PROGRAM)
    except ConfigError as exc:
        found.problem(where, "$", exc.what)
        return None
    entry = doc.get("entry") if isinstance(doc, dict) else None
    version = doc.get("version", "0") if isinstance(doc, dict) else "0"
    if not isinstance(version, str | int | float) or isinstance(version, bool):
        found.problem(where, "$.version", "a version is text like '1.0'")
        return None
    if not isinstance(entry, str) or not entry:
        found.problem(where, "$.entry", "needs `entry:`, the program's path relative to "
                      f"{PROGRAM}")
        return None
    try:
        installed = bundle.safe_path(f"{rel}/{entry}")
    except BundleError:
        found.problem(where, "$.entry", f"{entry!r} leaves the package; name a file inside it")
        return None
    files = [p for p in found.sources if p.startswith(rel + "/")]
    return AppPackage(rel, folder.name, str(version), platforms.package_platforms(files),
                      installed)


def _check_programs(found: Collected) -> None:
    """Each program's entry exists, executable, for every platform the package supports."""
    for package in found.packages:
        if package.entry is None:
            continue
        files = [p for p in found.sources if p.startswith(package.dir + "/")]
        for platform in _each(package.platforms):
            chosen = platforms.install_paths(files, platform)
            source = chosen.get(package.entry)
            if source is None or not os.access(found.sources[source], os.X_OK):
                what = "no such file" if source is None else f"{source} is not executable"
                found.problem(f"{package.dir}/{PROGRAM}", "$.entry",
                              f"entry {package.entry} on {platform}: {what}")


def _each(supported: tuple[str, ...]) -> tuple[str, ...]:
    return platforms.PLATFORMS if supported == (platforms.ANY,) else supported


def collect(root: Path) -> Collected:
    """Read an application directory: validate it, gather its files, packages and programs."""
    found = Collected(root)
    found.problems.extend(validate_application(root))
    try:
        gpath = graph_path(root)
    except ManifestError:
        return found  # already among the problems
    _add_tree(found, gpath.parent)
    if (gpath.parent / OVERRIDE).is_file():  # the deployment defaults ship and must fit
        found.problems.extend(validate_application(root, gpath.parent / OVERRIDE))
    for folder, name, version in _graph_packages(found, gpath):
        if (root / folder).is_dir():
            _add_tree(found, root / folder)
            found.packages.append(AppPackage(folder, name, version, (platforms.ANY,)))
    for program in sorted((root / "packages").glob(f"*/{PROGRAM}")):
        _add_tree(found, program.parent)
        record = _program(found, program.parent)
        if record:
            found.packages.append(record)
    if (root / "assets").is_dir():
        _add_tree(found, root / "assets")
        _refuse_images(found)
    _check_platforms(found)
    return found


def _refuse_images(found: Collected) -> None:
    """A build-container image would ride along unused (and large): say how to leave it out."""
    for rel, path in list(found.sources.items()):
        if rel.startswith("assets/") and is_container_image(path):
            found.problem(rel, "$", "a container image from `panorama-cli build-container`, "
                          "which edgefleet does not run; `fleet app import-panorama` leaves it out")


def _check_platforms(found: Collected) -> None:
    """File-name tags per package folder, then one platform every package supports."""
    by_package: dict[str, list[str]] = {}
    for path in found.sources:
        by_package.setdefault(platforms.package_of(path), []).append(path)
    before = len(found.problems)
    for folder, files in sorted(by_package.items()):
        for message in platforms.platform_problems(files):
            found.problem(folder, "$", message)
    if len(found.problems) > before:
        return
    if not platforms.app_platforms(found.sources):
        found.problems.extend(Problem("packages", "$", m)
                              for m in platforms.platform_problems(found.sources))
        return
    found.packages = [_with_platforms(found, p) for p in found.packages]
    _check_programs(found)


def _with_platforms(found: Collected, package: AppPackage) -> AppPackage:
    files = [p for p in found.sources if p.startswith(package.dir + "/")]
    return AppPackage(package.dir, package.name, package.version,
                      platforms.package_platforms(files), package.entry)


def default_version(root: Path) -> str:
    """The version of the application's code package(s), when they agree on one."""
    app = load_application(root)
    versions = {node.package_dir.name.rsplit("-", 1)[-1] for node in app.code_nodes
                if node.package_dir is not None}
    if len(versions) != 1:
        raise UsageError("cannot tell the application's version from its code packages "
                         f"({', '.join(sorted(versions)) or 'none'})", fix="give --version")
    return versions.pop()


def make_manifest(found: Collected, *, name: str, version: str, key_id: str,
                  min_runtime: str) -> AppManifest:
    entries = []
    for path, source in sorted(found.sources.items()):
        executable = os.access(source, os.X_OK)
        entries.append(FileEntry(path, source.stat().st_size, bundle.sha256_file(source),
                                 0o755 if executable else 0o644))
    draft = AppManifest(
        name=name, version=version, key_id=key_id,
        graph=graph_path(found.root).relative_to(found.root).as_posix(),
        min_runtime=min_runtime, platforms=platforms.app_platforms(found.sources),
        packages=tuple(found.packages), files=tuple(entries))
    try:
        return parse_app_manifest(draft.encode())  # the same checks the device runs
    except BundleError as exc:
        raise ConfigError(exc.message, where=str(found.root), fix="correct the application") \
            from None


@dataclass(frozen=True)
class Built:
    path: Path
    manifest: AppManifest
    key: firmware.ReleaseKey
    unchanged: bool = False  # the same bundle was already there


def _checked_root(app_dir: Path) -> Path:
    root = app_dir.resolve()
    if not root.is_dir():
        raise UsageError(f"no application directory at {app_dir}",
                         fix="give the folder that holds graphs/ and packages/")
    return root


def build(project: Project, app_dir: Path, *, passphrase: bytes | None,
          version: str | None = None, out_dir: Path | None = None, key_name: str | None = None,
          min_runtime: str | None = None, force: bool = False) -> Built:
    """Application directory -> signed bundle (atomic). Nothing is written unless all is valid."""
    root = _checked_root(app_dir)
    found = collect(root)
    if found.problems:
        raise AppInvalid(root, sorted(set(found.problems)))
    name = load_application(root).name
    version = version or default_version(root)
    _check_version(version, "--version")
    min_runtime = min_runtime or fleet_runtime.__version__
    _check_version(min_runtime, "--min-runtime")
    key = firmware.release_key(project, key_name)
    private = firmware.load_signing_key(key, passphrase)
    manifest = make_manifest(found, name=name, version=version, key_id=key.key_id,
                             min_runtime=min_runtime)
    out = (out_dir or apps_dir(project)).resolve()
    target = out / f"{manifest.name}-{manifest.version}{SUFFIX}"
    if _same_as_built(target, manifest, force):
        return Built(target, manifest, key, unchanged=True)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(target, 0o644, prefix=f".{target.name}.") as fh:
        bundle.write_bundle(fh, manifest, private, found.sources)
    return Built(target, manifest, key)


def _same_as_built(target: Path, manifest: AppManifest, force: bool) -> bool:
    """True when `target` already is this build; refuse to give other content the same version.

    Builds are reproducible (fixed tar metadata, deterministic signatures), so
    the same application, version and key make the same bundle byte for byte,
    and a device that has "1.2.0" always has the same files.
    """
    if force or not target.exists():
        return False
    from fleet_runtime.appbundle import read_app_manifest

    try:
        with open(target, "rb") as fh:
            existing = read_app_manifest(fh).raw
    except (BundleError, OSError):
        existing = b""
    if existing == manifest.encode():
        return True
    raise UsageError(f"{target} already holds other content as version {manifest.version}",
                     fix="give a new --version, or --force to replace it")


def _check_version(value: str, option: str) -> None:
    try:
        bundle.parse_version(value)
    except BundleError as exc:
        raise UsageError(exc.message, fix=f"give {option} as dotted numbers like 1.2.0") from None


def describe_problems(problems: list[Problem]) -> list[dict[str, Any]]:
    return [{"file": p.file, "path": p.path, "message": p.message} for p in problems]
