"""What a signed application bundle lets a deployment configure: its parameter and camera nodes.

Read from the bundle's own ``graph.json``, the ``package.json`` of each package
that declares an interface, and the bundled deployment defaults
(``graphs/<name>/override.json``), each member checked against the manifest's
SHA-256 before it is parsed. Nothing else of the bundle is read.

>>> graph = load_graph(Path("apps/face_blur-1.2.0.app"))     # doctest: +SKIP
>>> graph.params["min_score_param"].kind, graph.cameras["front_door"].overridable
('float32', True)
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from fleet_runtime.appbundle import AppManifest, read_app_manifest
from fleet_runtime.bundle import PAYLOAD, BundleError
from fleet_runtime.manifest.application import BUILTIN_PACKAGES, PARAM_TYPES

from fleet.errors import ConfigError

MAX_MEMBER = 4 << 20  # graph.json, package.json, override.json are small documents


@dataclass(frozen=True)
class ParamNode:
    name: str
    kind: str  # string | int32 | float32 | boolean
    default: Any
    overridable: bool
    where: str  # graph.json JSON path, for provenance


@dataclass(frozen=True)
class CameraSlot:
    name: str
    overridable: bool
    mandatory: bool
    default: tuple[str, ...] = ()  # camera names the bundled override.json binds
    has_stream: bool = False  # the camera package carries its own default streamUrl
    where: str = ""


@dataclass(frozen=True)
class AppGraph:
    """The configurable part of one application version."""

    app: str
    version: str
    graph_file: str  # bundle path of graph.json
    override_file: str | None  # bundle path of the bundled override.json, if any
    params: dict[str, ParamNode] = field(default_factory=dict)
    cameras: dict[str, CameraSlot] = field(default_factory=dict)
    bundled: dict[str, Any] = field(default_factory=dict)  # override.json's parameter values
    routing: tuple[Any, ...] = ()  # override.json's networkRoutingRules, carried over

    @property
    def nodes(self) -> set[str]:
        return set(self.params) | set(self.cameras)


def _member(tar: tarfile.TarFile, manifest: AppManifest, path: str) -> bytes:
    entry = next((f for f in manifest.files if f.path == path), None)
    info = tar.getmember(PAYLOAD + path)
    handle = tar.extractfile(info) if entry and 0 <= info.size <= MAX_MEMBER else None
    data = handle.read() if handle else b""
    if entry is None or hashlib.sha256(data).hexdigest() != entry.sha256:
        raise BundleError("checksum", f"{path} does not match the manifest")
    return data


def _json(tar: tarfile.TarFile, manifest: AppManifest, path: str) -> Any:
    try:
        return json.loads(_member(tar, manifest, path))
    except ValueError as exc:
        raise BundleError("json", f"{path}: not JSON ({exc})") from None


def _media_sources(tar: tarfile.TarFile, manifest: AppManifest) -> set[str]:
    """Interfaces (``package.interface``) whose category is media_source."""
    found = {f"{pkg}.{iface}" for pkg, ifaces in BUILTIN_PACKAGES.items()
             for iface, spec in ifaces.items() if spec[0] == "media_source"}
    for package in manifest.packages:
        path = f"{package.dir}/package.json"
        if not any(f.path == path for f in manifest.files):
            continue
        doc = _json(tar, manifest, path)
        interfaces = (doc.get("nodePackage") or {}).get("interfaces") or []
        found.update(f"{package.name}.{i.get('name')}" for i in interfaces
                     if isinstance(i, dict) and i.get("category") == "media_source")
    return found


def _has_stream(tar: tarfile.TarFile, manifest: AppManifest, interface: str) -> bool:
    package_name, _, iface = interface.rpartition(".")
    package = next((p for p in manifest.packages if p.name == package_name), None)
    if package is None or not any(f.path == f"{package.dir}/package.json"
                                  for f in manifest.files):
        return False
    doc = _json(tar, manifest, f"{package.dir}/package.json")
    for item in (doc.get("nodePackage") or {}).get("interfaces") or []:
        if isinstance(item, dict) and item.get("name") == iface:
            return any(i.get("name") == "streamUrl" and i.get("default")
                       for i in item.get("inputs") or [] if isinstance(i, dict))
    return False


def _bundled(doc: Any) -> tuple[dict[str, Any], dict[str, tuple[str, ...]]]:
    """Parameter values and camera bindings of a bundled override.json."""
    over = doc.get("nodeGraphOverrides") if isinstance(doc, dict) else None
    if not isinstance(over, dict):
        return {}, {}
    declared = {n.get("name"): n for n in over.get("nodes") or [] if isinstance(n, dict)}
    values: dict[str, Any] = {}
    bindings: dict[str, tuple[str, ...]] = {}
    for rule in over.get("nodeOverrides") or []:
        names = tuple(w.get("name") for w in rule.get("with") or [] if isinstance(w, dict))
        first = declared.get(names[0]) if len(names) == 1 else None
        if first is not None and "value" in first:
            values[str(rule.get("replace"))] = first["value"]
        else:
            bindings[str(rule.get("replace"))] = tuple(str(n) for n in names)
    return values, bindings


def _read(tar: tarfile.TarFile, manifest: AppManifest) -> AppGraph:
    graph = _json(tar, manifest, manifest.graph)
    override = str(PurePosixPath(manifest.graph).with_name("override.json"))
    has_override = any(f.path == override for f in manifest.files)
    values, bindings = _bundled(_json(tar, manifest, override)) if has_override else ({}, {})
    sources = _media_sources(tar, manifest)
    doc = _json(tar, manifest, override) if has_override else {}
    routing = ((doc.get("nodeGraphOverrides") or {}).get("networkRoutingRules") or []
               if isinstance(doc, dict) else [])
    out = AppGraph(manifest.name, manifest.version, manifest.graph,
                   override if has_override else None, bundled=values,
                   routing=tuple(routing) if isinstance(routing, list) else ())
    for index, node in enumerate((graph.get("nodeGraph") or {}).get("nodes") or []):
        where = f"$.nodeGraph.nodes[{index}]"
        name, iface = str(node.get("name")), str(node.get("interface"))
        overridable = bool(node.get("overridable", False))
        if iface in PARAM_TYPES:
            out.params[name] = ParamNode(name, iface, node.get("value"), overridable, where)
        elif iface in sources:
            out.cameras[name] = CameraSlot(
                name, overridable, bool(node.get("overrideMandatory")),
                bindings.get(name, ()), _has_stream(tar, manifest, iface), where)
    return out


_CACHE: dict[tuple[str, int, int], AppGraph] = {}


def load_graph(path: Path) -> AppGraph:
    """The configurable nodes of the bundle at `path` (cached per file while it is unchanged).

    The signature is the caller's to verify (``fleet.apps.store.verify``); here
    every member read is checked against the manifest's SHA-256.
    """
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        if key not in _CACHE:
            with path.open("rb") as fh:
                manifest = read_app_manifest(fh)
            with tarfile.open(path, "r:*") as tar:
                _CACHE[key] = _read(tar, manifest)
        return _CACHE[key]
    except (OSError, KeyError, tarfile.TarError, BundleError, AttributeError, TypeError) as exc:
        raise ConfigError(f"cannot read the application graph: {exc}", where=str(path),
                          fix="rebuild it with `fleet app build`") from None
