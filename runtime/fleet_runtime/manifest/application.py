"""Load a Panorama-style application directory, check it whole, resolve it into runnable nodes.

Layout (as Panorama's ``panorama-cli`` projects)::

    APP/graphs/<name>/graph.json            (or APP/graph.json)
    APP/packages/<account>-<NAME>-<version>/package.json
    APP/packages/.../<descriptorUri>        runtimeDescriptor | mlModelDescriptor
    APP/packages/.../<assetUri>             code directory (mounted as /panorama) | model directory

Asset and descriptor URIs resolve against the package directory, then
``APP/assets/`` (Panorama's content-addressed store).

>>> app = load_application(Path("runtime/examples/face_blur"))   # doctest: +SKIP
>>> [n.name for n in app.code_nodes]                              # doctest: +SKIP
['code_node']
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet_runtime.manifest import layouts
from fleet_runtime.manifest.entries import built_image_source, cli_asset, code_entry
from fleet_runtime.manifest.schema import Problem, validate_document

MAX_CAMERAS = 8
PARAM_TYPES = ("string", "int32", "float32", "boolean")
INT32 = (-(2**31), 2**31 - 1)
# Packages the runtime provides itself: interface -> (category, inputs, outputs).
BUILTIN_PACKAGES: dict[str, dict[str, tuple[str, dict[str, str], dict[str, str]]]] = {
    "panorama::abstract_rtsp_media_source": {
        "rtsp_v1_interface": ("media_source", {}, {"video_out": "media"}),
    },
    "panorama::hdmi_data_sink": {"hdmi0": ("media_sink", {"video_in": "media"}, {})},
}


class ManifestError(Exception):
    """The application does not validate; ``problems`` lists every error."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        first = str(problems[0]) if problems else "invalid application"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(first + more)


@dataclass
class Interface:
    package: str
    name: str
    category: str
    inputs: dict[str, str]
    outputs: dict[str, str]
    asset: str = ""
    package_dir: Path | None = None
    inbound_ports: tuple[int, ...] = ()
    defaults: dict[str, str] = field(default_factory=dict)  # camera url/username/password


@dataclass
class CameraNode:
    """A media source node; ``cameras`` are the camera names bound to it."""

    name: str
    cameras: list[str]
    mandatory: bool = False
    defaults: dict[str, str] = field(default_factory=dict)  # from the package's input defaults


@dataclass
class ModelNode:
    name: str
    model_path: Path
    descriptor: dict[str, Any]


@dataclass
class CodeNode:
    """A business-logic node: Python code with its ports wired from the graph."""

    name: str
    entry: Path
    code_root: Path
    params: dict[str, Any] = field(default_factory=dict)
    media_inputs: dict[str, list[str]] = field(default_factory=dict)
    media_outputs: dict[str, list[str]] = field(default_factory=dict)
    # every media output of the interface, also those no edge consumes: put() on those is
    # accepted and dropped, as on the appliance (AWS's ONNX sample has no output node)
    declared_outputs: list[str] = field(default_factory=list)
    launch: str = "onAppStart"
    needs_gpu: bool = False  # the package asks for inferenceAccelerators
    package_dir: Path | None = None


@dataclass
class Application:
    name: str
    root: Path
    code_nodes: list[CodeNode]
    model_nodes: dict[str, ModelNode]
    camera_nodes: dict[str, CameraNode]
    sink_nodes: list[str]
    routing: list[dict[str, Any]]
    warnings: list[Problem] = field(default_factory=list)  # accepted, but worth knowing


@dataclass
class _Loader:
    root: Path
    problems: list[Problem] = field(default_factory=list)
    interfaces: dict[str, Interface] = field(default_factory=dict)
    assets: dict[str, dict[str, Any]] = field(default_factory=dict)  # "pkg.asset" -> asset
    broken: set[str] = field(default_factory=set)  # packages already reported invalid
    warnings: list[Problem] = field(default_factory=list)
    override_file: str = "override.json"

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def problem(self, file: Path | str, path: str, message: str) -> None:
        name = self.rel(file) if isinstance(file, Path) else file
        self.problems.append(Problem(name, path, message))

    def warn(self, file: Path, path: str, message: str) -> None:
        self.warnings.append(Problem(self.rel(file), path, message))

    def read(self, path: Path, kind: str) -> dict[str, Any] | None:
        """A JSON document validated against its schema, or None (problems recorded)."""
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            self.problem(path, "$", "file not found")
            return None
        except (OSError, ValueError) as exc:
            self.problem(path, "$", f"not valid JSON: {exc}")
            return None
        found = validate_document(doc, kind, self.rel(path))
        self.problems.extend(found)
        return None if found else dict(doc)


def graph_path(root: Path) -> Path:
    """The application's graph.json: APP/graph.json or the one APP/graphs/*/graph.json."""
    if (root / "graph.json").is_file():
        return root / "graph.json"
    found = sorted(root.glob("graphs/*/graph.json"))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise ManifestError(
            [Problem(str(root), "$", f"{what} graphs/*/graph.json found; expected one")]
        )
    return found[0]


def validate_application(
    root: Path, override: Path | None = None, max_cameras: int = MAX_CAMERAS
) -> list[Problem]:
    """Every problem of the application at ``root`` (with ``override``); empty when valid."""
    try:
        load_application(root, override, max_cameras)
    except ManifestError as exc:
        return exc.problems
    return []


def load_application(
    root: Path, override: Path | None = None, max_cameras: int = MAX_CAMERAS
) -> Application:
    """Load, check and resolve an application; raise ManifestError listing every problem."""
    root = root.resolve()
    loader = _Loader(root)
    gpath = graph_path(root)
    graph = loader.read(gpath, "graph")
    over = loader.read(override, "override") if override else None
    loader.override_file = loader.rel(override) if override else loader.override_file
    if graph is None or (override and over is None):
        raise ManifestError(loader.problems)
    app = _resolve(loader, gpath, graph["nodeGraph"], over["nodeGraphOverrides"] if over else None)
    loader.problems.extend(
        check_camera_count(
            app, max_cameras, loader.rel(override) if override else loader.rel(gpath)
        )
    )
    if loader.problems:
        raise ManifestError(loader.problems)
    return app


def _resolve(
    loader: _Loader, gpath: Path, graph: dict[str, Any], over: dict[str, Any] | None
) -> Application:
    _load_packages(loader, gpath, graph.get("packages", []))
    nodes = _nodes_by_name(loader, gpath, graph["nodes"])
    cameras = _camera_nodes(loader, gpath, nodes)
    if over is not None:
        _apply_override(loader, over, nodes, cameras)
    _check_params(loader, gpath, nodes)
    code, models, sinks = _typed_nodes(loader, gpath, nodes)
    _wire_edges(loader, gpath, graph["edges"], nodes, code)
    routing = list(graph.get("networkRoutingRules", [])) + list(
        (over or {}).get("networkRoutingRules", [])
    )
    _check_routing(loader, gpath, routing, nodes)
    return Application(
        gpath.parent.name if gpath.parent != loader.root else loader.root.name,
        loader.root,
        list(code.values()),
        models,
        cameras,
        sinks,
        routing,
        loader.warnings,
    )


def _package_dir(root: Path, name: str, version: str) -> Path:
    account, _, short = name.partition("::")
    return root / "packages" / f"{account}-{short}-{version}"


def _load_packages(loader: _Loader, gpath: Path, refs: list[dict[str, str]]) -> None:
    for index, ref in enumerate(refs):
        name, version = ref["name"], ref["version"]
        if name in BUILTIN_PACKAGES:
            for iname, (category, ins, outs) in BUILTIN_PACKAGES[name].items():
                loader.interfaces[f"{name}.{iname}"] = Interface(name, iname, category, ins, outs)
            continue
        if name.startswith("panorama::"):
            loader.problem(
                gpath, f"$.nodeGraph.packages[{index}].name", f"unknown built-in package {name}"
            )
            continue
        _load_package(loader, gpath, index, name, version)


def _load_package(loader: _Loader, gpath: Path, index: int, name: str, version: str) -> None:
    pdir = _package_dir(loader.root, name, version)
    if not (pdir / "package.json").is_file():
        where = f"$.nodeGraph.packages[{index}]"
        loader.problem(
            gpath,
            where,
            f"package {name} {version} not found: expected {loader.rel(pdir)}/package.json",
        )
    doc = (
        loader.read(pdir / "package.json", "package") if (pdir / "package.json").is_file() else None
    )
    if doc is None:
        loader.broken.add(name)
        return
    pkg = doc["nodePackage"]
    # panorama-cli's camera package template has no name/version: the folder names them
    declared = (pkg.get("name", name.partition("::")[2]), pkg.get("version", version))
    if declared != (name.partition("::")[2], version):
        loader.problem(
            pdir / "package.json",
            "$.nodePackage",
            f"declares {declared[0]} {declared[1]}, graph asks for {name} {version}",
        )
    for iface in pkg["interfaces"]:
        ports = [p["port"] for p in iface.get("network", {}).get("inboundPorts", [])]
        loader.interfaces[f"{name}.{iface['name']}"] = Interface(
            name,
            iface["name"],
            iface["category"],
            {p["name"]: p["type"] for p in iface.get("inputs", [])},
            {p["name"]: p["type"] for p in iface.get("outputs", [])},
            iface["asset"],
            pdir,
            tuple(ports),
            layouts.camera_defaults(iface.get("inputs", [])),
        )
    loader.assets.update({f"{name}.{asset['name']}": asset for asset in pkg["assets"]})


def _nodes_by_name(
    loader: _Loader, gpath: Path, nodes: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    by_name: dict[str, dict[str, Any]] = {}
    for index, node in enumerate(nodes):
        where = f"$.nodeGraph.nodes[{index}]"
        if node["name"] in by_name:
            loader.problem(gpath, f"{where}.name", f"duplicate node name {node['name']}")
        iface = node["interface"]
        if (
            iface not in PARAM_TYPES
            and iface not in loader.interfaces
            and iface.rpartition(".")[0] not in loader.broken
        ):
            loader.problem(
                gpath,
                f"{where}.interface",
                f"unknown interface {iface}: list its package in packages and declare the"
                " interface",
            )
        by_name[node["name"]] = {**node, "_where": where}
    return by_name


def _camera_nodes(
    loader: _Loader, gpath: Path, nodes: dict[str, dict[str, Any]]
) -> dict[str, CameraNode]:
    cameras = {}
    for name, node in nodes.items():
        iface = loader.interfaces.get(node["interface"])
        if iface and iface.category == "media_source":
            cameras[name] = CameraNode(
                name, [name], bool(node.get("overrideMandatory")), dict(iface.defaults)
            )
    return cameras


def _apply_override(
    loader: _Loader,
    over: dict[str, Any],
    nodes: dict[str, dict[str, Any]],
    cameras: dict[str, CameraNode],
) -> None:
    """Bind cameras and replace parameter values (nodeOverrides) from override.json."""
    extra = {n["name"]: n for n in over.get("nodes", [])}
    for index, rule in enumerate(over.get("nodeOverrides", [])):
        where = f"$.nodeGraphOverrides.nodeOverrides[{index}]"
        target = nodes.get(rule["replace"])
        if target is None:
            loader.problem(
                loader.override_file, f"{where}.replace", f"no node {rule['replace']} in graph.json"
            )
            continue
        if not target.get("overridable", False):
            loader.problem(
                loader.override_file,
                f"{where}.replace",
                f"node {rule['replace']} is not overridable",
            )
            continue
        names = [w["name"] for w in rule["with"]]
        if rule["replace"] in cameras:
            cameras[rule["replace"]].cameras = names
            cameras[rule["replace"]].mandatory = False
        elif target["interface"] in PARAM_TYPES:
            _override_param(loader, where, target, names, extra)
    for name, cam in cameras.items():
        if cam.mandatory:
            loader.problem(
                loader.override_file,
                "$.nodeGraphOverrides.nodeOverrides",
                f"camera node {name} must be bound (overrideMandatory)",
            )


def _override_param(
    loader: _Loader, where: str, target: dict[str, Any], names: list[str], extra: dict[str, Any]
) -> None:
    replacement = extra.get(names[0])
    if len(names) != 1 or replacement is None or "value" not in replacement:
        loader.problem(
            loader.override_file,
            f"{where}.with",
            "a parameter is replaced by exactly one node declared in nodes with a value",
        )
    elif replacement["interface"] != target["interface"]:
        loader.problem(
            loader.override_file,
            f"{where}.with",
            f"{names[0]} is {replacement['interface']}, {target['name']} is {target['interface']}",
        )
    else:
        target["value"] = replacement["value"]


def param_error(kind: str, value: Any) -> str | None:
    """Why ``value`` is not a valid ``kind`` parameter value, or None."""
    if kind == "boolean":
        return None if isinstance(value, bool) else "expected true or false"
    if kind == "string":
        return None if isinstance(value, str) else "expected a string"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"expected a number for {kind}"
    if kind == "int32" and (not float(value).is_integer() or not INT32[0] <= value <= INT32[1]):
        return "expected a whole number within int32"
    if kind == "float32" and abs(value) > 3.4e38:
        return "out of float32 range"
    return None


def _check_params(loader: _Loader, gpath: Path, nodes: dict[str, dict[str, Any]]) -> None:
    for node in nodes.values():
        if node["interface"] not in PARAM_TYPES:
            continue
        if "value" not in node:
            loader.problem(
                gpath, f"{node['_where']}.value", f"parameter {node['name']} needs a value"
            )
            continue
        error = param_error(node["interface"], node["value"])
        if error:
            loader.problem(
                gpath, f"{node['_where']}.value", f"{node['name']}: {error}, got {node['value']!r}"
            )


def _asset(loader: _Loader, iface: Interface) -> dict[str, Any] | None:
    return loader.assets.get(f"{iface.package}.{iface.asset}")


def _resolve_uri(loader: _Loader, pdir: Path, uri: str) -> Path:
    """The package's own folder, else Panorama's assets/ store; when neither exists, the
    package folder (where `models fetch` puts files and messages should point)."""
    local = pdir / uri
    stored = loader.root / "assets" / uri
    return stored if not local.exists() and stored.exists() else local


def _shown(path: Path) -> str:
    """``path`` as the user would type it here: relative to the working directory if inside."""
    try:
        return str(path.relative_to(Path.cwd())) or "."
    except ValueError:
        return str(path)


def _typed_nodes(
    loader: _Loader, gpath: Path, nodes: dict[str, dict[str, Any]]
) -> tuple[dict[str, CodeNode], dict[str, ModelNode], list[str]]:
    code: dict[str, CodeNode] = {}
    models: dict[str, ModelNode] = {}
    sinks: list[str] = []
    for name, node in nodes.items():
        iface = loader.interfaces.get(node["interface"])
        if iface is None or iface.category in ("media_source",):
            continue
        if iface.category == "media_sink":
            sinks.append(name)
            continue
        asset = _asset(loader, iface) or cli_asset(loader, iface)
        if asset is None or iface.package_dir is None:
            loader.problem(
                gpath,
                f"{node['_where']}.interface",
                f"interface {iface.name} names asset {iface.asset!r}, which its package does"
                " not declare",
            )
            continue
        impl = asset["implementations"][0]
        asset_path = _resolve_uri(loader, iface.package_dir, impl["assetUri"])
        descriptor = _resolve_uri(loader, iface.package_dir, impl["descriptorUri"])
        if iface.category == "business_logic":
            asset_path, descriptor = built_image_source(loader, iface, impl, asset_path, descriptor)
            built = _code_node(loader, name, node, asset_path, descriptor)
            if built:
                built.needs_gpu = layouts.needs_gpu(asset, impl)
                built.package_dir = iface.package_dir
                built.declared_outputs = [p for p, t in iface.outputs.items() if t == "media"]
                code[name] = built
        elif iface.category == "ml_model":
            model = _model_node(loader, name, asset_path, descriptor)
            if model:
                models[name] = model
    return code, models, sinks


def _code_node(
    loader: _Loader, name: str, node: dict[str, Any], asset: Path, descriptor: Path
) -> CodeNode | None:
    entry = code_entry(loader, asset, descriptor)
    if entry is None:
        return None
    return CodeNode(name, entry, asset, launch=node.get("launch", "onAppStart"))


def _model_node(loader: _Loader, name: str, asset: Path, descriptor: Path) -> ModelNode | None:
    doc = loader.read(descriptor, "model")
    if doc is None:
        return None
    desc = doc["mlModelDescriptor"]
    # assetUri names a folder (Panorama's "model"), or a file; a missing folder is still one
    base = asset.parent if asset.is_file() or asset.suffix else asset
    model_path = base / desc["onnx"]["asset"]
    if not model_path.is_file():
        loader.problem(
            descriptor,
            "$.mlModelDescriptor.onnx.asset",
            f"model file not found: {loader.rel(model_path)}; fetch or build it with "
            f"`fleet-runtime models fetch {_shown(loader.root)}`",
        )
        return None
    return ModelNode(name, model_path, desc)


def _ports(loader: _Loader, node: dict[str, Any], outputs: bool) -> dict[str, str]:
    if node["interface"] in PARAM_TYPES:
        return {"": node["interface"]} if outputs else {}
    iface = loader.interfaces.get(node["interface"])
    if iface is None:
        return {}
    return iface.outputs if outputs else iface.inputs


def _wire_edges(
    loader: _Loader,
    gpath: Path,
    edges: list[dict[str, str]],
    nodes: dict[str, dict[str, Any]],
    code: dict[str, CodeNode],
) -> None:
    for index, edge in enumerate(edges):
        where = f"$.nodeGraph.edges[{index}]"
        pnode, _, pport = edge["producer"].partition(".")
        cnode, _, cport = edge["consumer"].partition(".")
        ptype = _port_type(loader, gpath, f"{where}.producer", nodes, pnode, pport, outputs=True)
        ctype = _port_type(loader, gpath, f"{where}.consumer", nodes, cnode, cport, outputs=False)
        if ptype is None or ctype is None:
            continue
        if ptype != ctype:
            loader.problem(
                gpath, where, f"{edge['producer']} is {ptype} but {edge['consumer']} is {ctype}"
            )
            continue
        _connect(nodes, code, pnode, pport, cnode, cport, ctype)


def _port_type(
    loader: _Loader,
    gpath: Path,
    where: str,
    nodes: dict[str, dict[str, Any]],
    node: str,
    port: str,
    outputs: bool,
) -> str | None:
    if node not in nodes:
        loader.problem(gpath, where, f"no node named {node}")
        return None
    ports = _ports(loader, nodes[node], outputs)
    if (
        not ports
        and nodes[node]["interface"] not in loader.interfaces
        and nodes[node]["interface"] not in PARAM_TYPES
    ):
        return None  # unknown interface, already reported
    if port not in ports:
        side = "outputs" if outputs else "inputs"
        listed = ", ".join(sorted(p for p in ports if p)) or "none"
        label = f"{node}.{port}" if port else node
        loader.problem(gpath, where, f"{label} is not one of {node}'s {side} ({listed})")
        return None
    return ports[port]


def _connect(
    nodes: dict[str, dict[str, Any]],
    code: dict[str, CodeNode],
    pnode: str,
    pport: str,
    cnode: str,
    cport: str,
    kind: str,
) -> None:
    if cnode in code:
        if kind in PARAM_TYPES:
            code[cnode].params[cport] = nodes[pnode].get("value")
        elif kind == "media":
            code[cnode].media_inputs.setdefault(cport, []).append(pnode)
    if pnode in code and kind == "media":
        code[pnode].media_outputs.setdefault(pport, []).append(cnode)


def _check_routing(
    loader: _Loader, gpath: Path, rules: list[dict[str, Any]], nodes: dict[str, dict[str, Any]]
) -> None:
    for index, rule in enumerate(rules):
        where = f"$.nodeGraph.networkRoutingRules[{index}]"
        node = nodes.get(rule["node"])
        if node is None:
            loader.problem(gpath, f"{where}.node", f"no node named {rule['node']}")
            continue
        iface = loader.interfaces.get(node["interface"])
        if iface is not None and rule["containerPort"] not in iface.inbound_ports:
            loader.problem(
                gpath,
                f"{where}.containerPort",
                f"port {rule['containerPort']} is not declared in the package's"
                " network.inboundPorts",
            )


def check_camera_count(
    app: Application, limit: int = MAX_CAMERAS, file: str = "graph.json"
) -> list[Problem]:
    """Problems when the application binds more than ``limit`` camera streams."""
    total = sum(len(node.cameras) for node in app.camera_nodes.values())
    if total <= limit:
        return []
    message = (
        f"{total} camera streams bound; at most {limit} per application (raise with --max-cameras)"
    )
    return [Problem(file, "$", message)]
