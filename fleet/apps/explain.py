"""`fleet app explain DEVICE APP|BUNDLE`: one device's configuration, each value with its layer.

>>> cfg = explain(project, "berlin-01", "face_blur", ["min_score=0.7"])   # doctest: +SKIP
>>> cfg.values()["min_score"]["layer"]                                  # doctest: +SKIP
'cli'
"""

from __future__ import annotations

import functools
from pathlib import Path

from fleet_runtime.appbundle import SUFFIX
from fleet_runtime.bundle import compare_versions

from fleet import inventory as inv
from fleet.apps.config import DeviceConfig, configure
from fleet.apps.store import listing
from fleet.errors import UsageError
from fleet.project import Project


def find_bundle(project: Project, app_or_path: str) -> Path:
    """A bundle file as given, or the newest built version of the application named."""
    path = Path(app_or_path)
    if path.suffix == SUFFIX or path.exists():
        if not path.is_file():
            raise UsageError(f"no application bundle at {path}",
                             fix="check the path, or `fleet app build`")
        return path
    rows = [r for r in listing(project) if r["name"] == app_or_path and r["version"]]
    if not rows:
        raise UsageError(f"no built bundle of application {app_or_path!r} in apps/",
                         fix="give a bundle path, or `fleet app build` it (`fleet app list`)")
    versions = {str(r["version"]): Path(str(r["bundle"])) for r in rows}
    return versions[max(versions, key=functools.cmp_to_key(compare_versions))]


def explain(project: Project, device: str, app_or_path: str, sets: list[str],
            inventory: str | None = None) -> DeviceConfig:
    """`device`'s configuration of the application, sources with file:line where known."""
    bundle = find_bundle(project, app_or_path)
    selection = inv.Selection.of(inventory, limit=device, limit_given_as="DEVICE")
    host = inv.select(project, selection).inventory.hosts[device]
    name = inventory or str(project.config.get("inventory", "lab"))
    folder = None if name == inv.REGISTRY_INVENTORY else inv.inventory_dir(project, name)
    return configure(project, host, bundle, sets, inventory=folder)
