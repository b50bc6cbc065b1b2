"""The application bundle format, used by both halves (the controller builds, the device verifies).

An application bundle is the OTA bundle's tar format (``fleet_runtime.bundle``:
``manifest.json``, ``manifest.sig`` by a release key, ``payload/<path>``), with
the same streaming reader, limits and refusals (links, ``..``, absolute paths,
duplicates, unlisted members, sizes, SHA-256). Only the manifest differs::

    {"format": "edgefleet-app/1", "name": "face_blur", "version": "1.2.0",
     "key_id": "...", "graph": "graphs/face_blur/graph.json",
     "min_runtime": "0.1.0", "platforms": ["*"],
     "packages": [{"dir": "packages/123456789012-FACE_BLUR_CODE-1.0", "name": "...",
                   "version": "1.0", "platforms": ["*"], "entry": null}],
     "files": [{"path": "graphs/face_blur/graph.json", "size": 1234, "sha256": "...",
                "mode": 420}, ...]}

A program package (``entry`` set) starts a native helper: ``entry`` is its
path on the device, which every supported platform's variant must provide
as an executable. The two formats cannot be mistaken for each other: each
parser refuses the other's ``format``.

>>> with open("face_blur-1.2.0.app", "rb") as fh:     # doctest: +SKIP
...     manifest = read_app_bundle(fh, Keyring.from_dir(layout.release_keys))
>>> platform_variant(manifest, "aarch64")            # doctest: +SKIP
Variant(platform='linux-arm64-v8', files={...})
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from fleet_runtime import platforms
from fleet_runtime.bundle import (
    BundleError,
    FileEntry,
    Keyring,
    PayloadSink,
    Progress,
    check_identity,
    compare_versions,
    load_document,
    parse_files,
    parse_version,
    read_signed,
    read_signed_manifest,
    safe_path,
)

APP_FORMAT = "edgefleet-app/1"
SUFFIX = ".app"


@dataclass(frozen=True)
class AppPackage:
    dir: str  # packages/<folder>
    name: str
    version: str
    platforms: tuple[str, ...]
    entry: str | None = None  # a program package's executable, as installed

    def as_json(self) -> dict[str, Any]:
        return {"dir": self.dir, "name": self.name, "version": self.version,
                "platforms": list(self.platforms), "entry": self.entry}


@dataclass(frozen=True)
class AppManifest:
    name: str
    version: str
    key_id: str
    graph: str
    min_runtime: str
    platforms: tuple[str, ...]
    packages: tuple[AppPackage, ...]
    files: tuple[FileEntry, ...]
    description: str = ""
    raw: bytes = field(default=b"", compare=False)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    def as_json(self) -> dict[str, Any]:
        return {
            "format": APP_FORMAT, "name": self.name, "version": self.version,
            "key_id": self.key_id, "graph": self.graph, "min_runtime": self.min_runtime,
            "platforms": list(self.platforms), "description": self.description,
            "packages": [p.as_json() for p in self.packages],
            "files": [f.as_json() for f in self.files],
        }

    def encode(self) -> bytes:
        return (json.dumps(self.as_json(), indent=1, sort_keys=True) + "\n").encode()


def _bad(what: str) -> BundleError:
    return BundleError("bad-manifest", f"manifest: {what}")


def _platform_list(value: Any, where: str) -> tuple[str, ...]:
    known = (platforms.ANY, *platforms.PLATFORMS)
    if not (isinstance(value, list) and value and all(v in known for v in value)):
        raise _bad(f"{where} must list platforms from {', '.join(known)}")
    return tuple(value)


def _package(item: Any, paths: set[str]) -> AppPackage:
    if not isinstance(item, dict) or not all(isinstance(item.get(k), str)
                                             for k in ("dir", "name", "version")):
        raise _bad("each of 'packages' needs dir, name and version strings")
    folder, entry = safe_path(item["dir"]), item.get("entry")
    if entry is not None:  # a device path: the same rules as a payload path
        entry = safe_path(entry) if isinstance(entry, str) else safe_path("")
    if not any(p.startswith(folder + "/") for p in paths):
        raise _bad(f"package {folder!r} has no file in the bundle")
    return AppPackage(folder, item["name"], item["version"],
                      _platform_list(item.get("platforms"), f"platforms of {folder!r}"), entry)


def parse_app_manifest(raw: bytes) -> AppManifest:
    """Parse and check application manifest bytes (the signature is checked by the reader)."""
    doc = load_document(raw)
    if doc.get("format") != APP_FORMAT:
        raise _bad(f"format {doc.get('format')!r} is not {APP_FORMAT} (an OTA bundle?)")
    check_identity(doc)
    parse_version(str(doc.get("min_runtime")))
    entries = parse_files(doc)
    paths = {e.path for e in entries}
    if not isinstance(doc.get("graph"), str) or doc["graph"] not in paths:
        raise _bad(f"graph {doc.get('graph')!r} is not a file of the bundle")
    packages = doc.get("packages")
    if not isinstance(packages, list):
        raise _bad("'packages' must be a list")
    manifest = AppManifest(
        name=doc["name"], version=doc["version"], key_id=doc["key_id"], graph=doc["graph"],
        min_runtime=str(doc["min_runtime"]), platforms=_platform_list(doc.get("platforms"),
                                                                       "'platforms'"),
        packages=tuple(_package(p, paths) for p in packages), files=entries,
        description=str(doc.get("description", "")), raw=raw)
    check_platforms(manifest)
    return manifest


def check_platforms(manifest: AppManifest) -> None:
    """The recorded platforms are the ones the files give; each program's entry is executable."""
    paths = [f.path for f in manifest.files]
    problems = platforms.platform_problems(paths)
    if problems:
        raise BundleError("bad-platforms", problems[0])
    if manifest.platforms != platforms.app_platforms(paths):
        raise _bad(f"platforms {list(manifest.platforms)} are not what the files carry "
                   f"({list(platforms.app_platforms(paths))})")
    for package in manifest.packages:
        if package.entry is not None:
            for platform in _each(manifest.platforms):
                _check_entry(manifest, package, platform)


def _each(supported: tuple[str, ...]) -> tuple[str, ...]:
    return platforms.PLATFORMS if supported == (platforms.ANY,) else supported


def _check_entry(manifest: AppManifest, package: AppPackage, platform: str) -> None:
    variant = platform_variant(manifest, platform)
    assert isinstance(variant, Variant)  # the platform is one the manifest supports
    found = variant.files.get(package.entry or "")
    if found is None or found.mode != 0o755:
        what = "is not in the bundle" if found is None else "is not executable (mode 0755)"
        raise _bad(f"program entry {package.entry!r} of {package.dir!r} {what} for {platform}")


# ---------------------------------------------------------------------------- platforms


@dataclass(frozen=True)
class Variant:
    """What a device of `platform` installs: device path -> the bundle's file."""

    platform: str
    files: dict[str, FileEntry]


@dataclass(frozen=True)
class Refusal:
    reason: str


def platform_variant(manifest: AppManifest, device_platform: str) -> Variant | Refusal:
    """The files a device of `device_platform` (a tag, or its ``uname -m``) gets, or why none.

    >>> platform_variant(manifest, "riscv64")       # doctest: +SKIP
    Refusal(reason='unknown platform riscv64 (known: ...)')
    """
    platform = platforms.device_platform(device_platform)
    if platform is None:
        return Refusal(f"unknown platform {device_platform} "
                       f"(known: {', '.join(platforms.PLATFORMS)})")
    if platforms.ANY not in manifest.platforms and platform not in manifest.platforms:
        return Refusal(f"{manifest.name} {manifest.version} ships variants for "
                       f"{', '.join(manifest.platforms) or 'no platform'}, not {platform}")
    by_path = {f.path: f for f in manifest.files}
    chosen = platforms.install_paths(by_path, platform)
    return Variant(platform, {device: by_path[path] for device, path in chosen.items()})


# ---------------------------------------------------------------------------- reading


def read_app_manifest(stream: BinaryIO, keyring: Keyring | None = None) -> AppManifest:
    """The manifest only (first members); with a keyring its signature is verified too."""
    return read_signed_manifest(stream, keyring, parse_app_manifest)


def read_app_bundle(stream: BinaryIO, keyring: Keyring | None, sink: PayloadSink | None = None,
                    on_progress: Progress | None = None) -> AppManifest:
    """Verify a whole application bundle (signature, then every member), streaming into `sink`."""
    return read_signed(stream, keyring, parse_app_manifest, sink, on_progress=on_progress)


def check_runtime(manifest: AppManifest, runtime_version: str) -> None:
    """Refuse a bundle that needs a newer runtime than `runtime_version`."""
    if compare_versions(runtime_version, manifest.min_runtime) < 0:
        raise BundleError("min-runtime", f"{manifest.name} {manifest.version} needs runtime "
                          f"{manifest.min_runtime} or newer, this device has {runtime_version}")
