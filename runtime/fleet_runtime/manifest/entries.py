"""Where a package's code is: its entry file (a .py, or the one a launch script starts),
and the asset of a panorama-cli project that has not declared one yet.

Split from ``application`` (which calls these while resolving code nodes);
``layouts`` holds the format knowledge, this module reports on the loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleet_runtime.manifest import layouts

if TYPE_CHECKING:
    from fleet_runtime.manifest.application import Interface, _Loader


def cli_asset(loader: _Loader, iface: Interface) -> dict[str, Any] | None:
    """A panorama-cli project before build-container: resolve its folders as the tool does."""
    if iface.package_dir is None or any(
        key.startswith(f"{iface.package}.") for key in loader.assets
    ):
        return None  # the package declares assets: a missing one is an error
    impl = layouts.cli_asset(iface.package_dir, iface.category)
    if impl is None:
        return None
    loader.warn(
        iface.package_dir / "package.json",
        "$.nodePackage.assets",
        f"empty (a panorama-cli project before build-container): using"
        f" {impl['assetUri']}/ and {impl['descriptorUri']} for {iface.asset or iface.name}",
    )
    return {"name": iface.asset, "implementations": [impl]}


def built_image_source(
    loader: _Loader, iface: Interface, impl: dict[str, Any], asset: Path, descriptor: Path
) -> tuple[Path, Path]:
    """The source folder of a code asset that ``panorama-cli build-container`` turned into an image.

    After build-container a code asset names ``assets/<sha>.tar.gz``, a Docker
    image the runtime does not unpack (and a cloned project often lacks it:
    assets/ is not committed). The package's own source folder, the one its
    Dockerfile copies to /panorama, holds the same code.
    """
    if impl["type"] != "container" or asset.is_dir() or iface.package_dir is None:
        return asset, descriptor
    source = layouts.cli_asset(iface.package_dir, iface.category)
    if source is None:
        return asset, descriptor
    state = "a built container image" if asset.exists() else "missing"
    loader.warn(
        iface.package_dir / "package.json",
        "$.nodePackage.assets",
        f"{impl['assetUri']} is {state}: using {source['assetUri']}/, the folder the"
        " Dockerfile copies to /panorama",
    )
    if not descriptor.is_file():
        descriptor = iface.package_dir / source["descriptorUri"]
    return iface.package_dir / source["assetUri"], descriptor


def code_entry(loader: _Loader, asset: Path, descriptor: Path) -> Path | None:
    """The Python file a code descriptor starts (problems recorded when there is none)."""
    doc = loader.read(descriptor, "runtime")
    if doc is None:
        return None
    entry_doc = doc["runtimeDescriptor"]["entry"]
    entry = _entry_file(loader, descriptor, asset, entry_doc["name"])
    if entry is not None and layouts.is_shell(entry_doc["path"]):
        entry = _shell_entry(loader, descriptor, asset, entry)
    elif entry is not None and entry.suffix != ".py":
        loader.problem(
            descriptor,
            "$.runtimeDescriptor.entry",
            f"{entry_doc['path']} cannot start {entry_doc['name']}: use bash for a .sh script",
        )
        return None
    return entry


def _entry_file(loader: _Loader, descriptor: Path, asset: Path, name: str) -> Path | None:
    entry = asset / name.removeprefix("/panorama/")
    if not entry.is_file():
        loader.problem(
            descriptor,
            "$.runtimeDescriptor.entry.name",
            f"{name} not found: expected {loader.rel(entry)}",
        )
        return None
    return entry


def _shell_entry(loader: _Loader, descriptor: Path, asset: Path, script: Path) -> Path | None:
    """The Python file a launch script starts (the script itself is read, not run)."""
    name, skipped = layouts.python_entry(script.read_text(errors="replace"))
    for line in skipped:
        loader.warn(script, "$", line)
    if name is None or not name.startswith("/panorama/"):
        loader.problem(
            descriptor,
            "$.runtimeDescriptor.entry.name",
            f"{loader.rel(script)} starts no python3 /panorama/<file>.py: add that line,"
            " or name the .py file as the entry with path python3",
        )
        return None
    return _entry_file(loader, script, asset, name)
