"""Application bundles on the controller: inspect, verify against the release keys, list apps/.

>>> verify(project, Path("apps/face_blur-1.2.0.app")).version   # doctest: +SKIP
'1.2.0'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

from fleet_runtime import appbundle
from fleet_runtime.appbundle import SUFFIX, AppManifest
from fleet_runtime.bundle import BundleError

from fleet import firmware
from fleet.apps.build import apps_dir
from fleet.errors import FleetError, UsageError
from fleet.project import Project


class BundleRefused(FleetError):
    """A bundle that is not what it claims (tampered, truncated, unsafe, wrong key): bad input."""

    exit_code = 2


def _open(path: Path) -> BinaryIO:
    if not path.is_file():
        raise UsageError(f"no application bundle at {path}",
                         fix="check the path, or `fleet app build`")
    return open(path, "rb")  # noqa: SIM115 - callers close it


def _refused(path: Path, exc: BundleError) -> BundleRefused:
    return BundleRefused(f"bundle refused: {exc.code}: {exc.message}", where=str(path),
                         fix="rebuild it with `fleet app build`, or check the release keys")


def inspect(path: Path) -> AppManifest:
    """The manifest only (signature not checked; `verify` does that)."""
    with _open(path) as fh:
        try:
            return appbundle.read_app_manifest(fh)
        except BundleError as exc:
            raise _refused(path, exc) from None


def verify(project: Project, path: Path) -> AppManifest:
    """As a device checks it: signature by a project release key, then every size and SHA-256."""
    with _open(path) as fh:
        try:
            return appbundle.read_app_bundle(fh, firmware.keyring(project))
        except BundleError as exc:
            raise _refused(path, exc) from None


def describe(manifest: AppManifest, path: Path | None = None) -> dict[str, Any]:
    """A manifest as plain data for ``--json`` and tables."""
    out = manifest.as_json()
    out.update(total_size=manifest.total_size, manifest_sha256=manifest.digest)
    if path is not None:
        out.update(path=str(path), bundle_size=path.stat().st_size)
    return out


def listing(project: Project, folder: Path | None = None) -> list[dict[str, Any]]:
    """Every bundle in apps/ (manifest read, not verified); an unreadable one says why."""
    where = folder or apps_dir(project)
    rows = []
    for path in sorted(where.glob(f"*{SUFFIX}")) if where.is_dir() else []:
        try:
            m = inspect(path)
            rows.append({"name": m.name, "version": m.version, "platforms": list(m.platforms),
                         "min_runtime": m.min_runtime, "files": len(m.files),
                         "size": m.total_size, "bundle": str(path), "error": None})
        except FleetError as exc:
            rows.append({"name": path.stem, "version": None, "platforms": [],
                         "min_runtime": None, "files": 0, "size": 0, "bundle": str(path),
                         "error": exc.what})
    return rows
