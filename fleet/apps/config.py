"""Per-device application configuration: parameters and camera bindings, each with its layer.

Layers, lowest first (a higher one replaces a lower one's value for a node)::

    graph   graph.json's parameter values; the bundle's graphs/<name>/override.json
    group   inventory defaults.yaml, then each group (a host's first-listed group wins,
            as Nornir resolves data); `site-*` groups are not here but in:
    site    the group `site-<site>` of the host's site
    host    the host's own data
    cli     `-e NODE=VALUE` on the command line

In the inventory, values live under ``data: {apps: {<app>: {<node>: <value>}}}``
of defaults, a group, a site group or a host. A camera node's value is a list of
registry camera names, or text: ``NAME,NAME`` or selectors ``tag:KEY`` /
``tag:KEY=VALUE`` (the device's own cameras with that tag). YAML ``null`` (``~``)
in a layer, or ``-e NODE=~``, unsets: the node goes back to the graph's default.

>>> cfg = configure(project, nr.inventory.hosts["berlin-01"], Path("apps/face_blur-1.2.0.app"),
...                 ["min_score_param=0.7", "front_door=tag:entrance"])   # doctest: +SKIP
>>> cfg.refusal() is None, cfg.cameras()                                 # doctest: +SKIP
(True, {'front_door': ['berlin-01-entrance']})
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet_runtime.manifest.application import MAX_CAMERAS, param_error
from nornir.core.inventory import Host

from fleet.agent import Agent
from fleet.apps.config_graph import AppGraph, load_graph
from fleet.apps.config_lines import InventoryLines
from fleet.cameras import Limits
from fleet.errors import UsageError
from fleet.project import Project
from fleet.registry import Store, open_registry

LAYERS = ("graph", "group", "site", "host", "cli")
UNSET = "~"
APPS_KEY = "apps"
OVERRIDE_FILE = "override.json"
_NODE = re.compile(r"^[A-Za-z0-9_-]{1,255}\Z")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


class BadSetting(UsageError):
    """A malformed ``-e`` (exit 2): not NODE=VALUE, or not a node name."""


@dataclass(frozen=True)
class Setting:
    """One layer's value for one node; ``value`` None means unset (back to the default)."""

    node: str
    value: Any
    layer: str
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "layer": self.layer, "source": self.source}


@dataclass
class DeviceConfig:
    """One device's configuration of one application version (see the module docstring)."""

    device: str
    graph: AppGraph
    history: dict[str, list[Setting]] = field(default_factory=dict)  # node -> every layer's
    bindings: dict[str, list[str]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    device_cameras: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _passwords: dict[str, str] = field(default_factory=dict, repr=False)

    def refusal(self) -> str | None:
        """Why this device cannot take this configuration; None when it can."""
        return "; ".join(self.problems) if self.problems else None

    def final(self, node: str) -> Setting:
        return self.history[node][-1]

    def cameras(self) -> dict[str, list[str]]:
        """Camera node -> registry camera names (no URLs, no credentials)."""
        return {node: list(names) for node, names in self.bindings.items()}

    def files(self) -> dict[str, bytes]:
        """Per-device files of the version: ``override.json`` (Panorama's nodeOverrides)."""
        nodes, rules = [], []
        for name, value in sorted(self.params.items()):
            if self.graph.params[name].overridable:
                kind = self.graph.params[name].kind
                nodes.append({"name": f"{name}__value", "interface": kind, "value": value})
                rules.append({"replace": name, "with": [{"name": f"{name}__value"}]})
        for node, names in sorted(self.bindings.items()):
            rules.append({"replace": node, "with": [{"name": n} for n in names]})
        doc: dict[str, Any] = {"nodeGraphOverrides": {
            "envelopeVersion": "2021-01-01", "nodes": nodes, "nodeOverrides": rules}}
        if self.graph.routing:  # the runtime reads one override: keep the bundle's routes
            doc["nodeGraphOverrides"]["networkRoutingRules"] = list(self.graph.routing)
        return {OVERRIDE_FILE: (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()}

    def sealed(self) -> bytes | None:
        """The device's ``etc/fleet/cameras.json`` (0600 there): every registry camera of this
        device with its credentials, or None when the application binds no camera."""
        if not self.bindings or self.problems:
            return None
        entries = [{"name": c["name"], "url": c["rtsp_url"], "username": c["username"] or None,
                    "password": self._passwords.get(c["name"]) or None}
                   for c in sorted(self.device_cameras, key=lambda c: str(c["name"]))]
        return (json.dumps({"cameras": entries}, sort_keys=True) + "\n").encode()

    def values(self) -> dict[str, dict[str, Any]]:
        """Each node's final value, the layer and source that set it, and what it replaced."""
        out: dict[str, dict[str, Any]] = {}
        for node, chain in sorted(self.history.items()):
            last = chain[-1]
            final = self.bindings.get(node, self.params.get(node))
            out[node] = {"kind": "camera" if node in self.graph.cameras
                         else self.graph.params[node].kind,
                         "value": final, "set_as": last.value, "layer": last.layer,
                         "source": last.source,
                         "replaced": [s.as_dict() for s in reversed(chain[:-1])]}
        return out

    def summary(self) -> dict[str, Any]:
        """For a plan: the final parameters and camera bindings with their layers; no secret."""
        vals = self.values()
        return {
            "device": self.device, "app": self.graph.app, "version": self.graph.version,
            "parameters": {n: {k: v[k] for k in ("value", "layer", "source")}
                           for n, v in vals.items() if v["kind"] != "camera"},
            "cameras": {n: {"cameras": v["value"] or [], "set_as": v["set_as"],
                            "layer": v["layer"], "source": v["source"]}
                        for n, v in vals.items() if v["kind"] == "camera"},
            "refused": self.refusal(),
        }


# ------------------------------------------------------------------------------ the layers


def parse_sets(sets: list[str]) -> list[tuple[str, str]]:
    """``-e NODE=VALUE`` items as pairs; a malformed one raises BadSetting (exit 2)."""
    out = []
    for item in sets:
        node, sep, value = item.partition("=")
        if not sep or not _NODE.match(node):
            raise BadSetting(f"-e {item[:80]!r}: expected NODE=VALUE with a graph node name",
                             fix="e.g. -e min_score=0.7, -e front_door=tag:entrance, "
                                 "-e front_door=cam-1,cam-2, or -e NODE=~ to unset")
        out.append((node, value))
    return out


def _groups(host: Host) -> list[Any]:
    """The host's groups in Nornir's priority order (first listed first, then its parents)."""
    seen: list[Any] = []

    def walk(groups: Any) -> None:
        for group in groups:
            if all(group is not g for g in seen):
                seen.append(group)
                walk(group.groups)

    walk(host.groups)
    return seen


def _apps(data: Any, app: str) -> dict[str, Any]:
    apps = (data or {}).get(APPS_KEY) if isinstance(data, dict) else None
    mine = apps.get(app) if isinstance(apps, dict) else None
    return mine if isinstance(mine, dict) else {}


Source = Callable[[str], str]


def inventory_layers(host: Host, app: str, lines: InventoryLines | None = None
                     ) -> Iterator[tuple[str, Source, dict[str, Any]]]:
    """(layer, node -> where it was set, {node: value}) from the inventory, lowest first."""
    where = lines or InventoryLines(None)

    def at(kind: str, name: str | None) -> Source:
        return lambda node: where.source(kind, name, app, node)

    site_group = f"site-{(host.data or {}).get('site')}"
    groups = _groups(host)
    yield "group", at("defaults", None), _apps(host.defaults.data, app)
    for group in reversed([g for g in groups if not g.name.startswith("site-")]):
        yield "group", at("group", group.name), _apps(group.data, app)
    for group in groups:
        if group.name == site_group:
            yield "site", at("group", group.name), _apps(group.data, app)
    yield "host", at("host", host.name), _apps(host.data, app)


def _cli_value(graph: AppGraph, node: str, text: str) -> Any:
    """A command-line value typed as the node needs it (text stays text where it cannot)."""
    if text == UNSET:
        return None
    kind = graph.params[node].kind if node in graph.params else "camera"
    if kind in ("int32", "float32"):
        for number in (int, float):
            try:
                return number(text)
            except ValueError:
                pass
        return text
    if kind == "boolean" and text.lower() in _TRUE + _FALSE:
        return text.lower() in _TRUE
    return text


def _graph_layer(graph: AppGraph) -> dict[str, list[Setting]]:
    history: dict[str, list[Setting]] = {}
    for name, param in graph.params.items():
        history[name] = [Setting(name, param.default, "graph",
                                 f"{graph.graph_file} {param.where}.value")]
        if name in graph.bundled and graph.override_file:
            history[name].append(Setting(name, graph.bundled[name], "graph", graph.override_file))
    for name, slot in graph.cameras.items():
        history[name] = [Setting(name, list(slot.default) or None, "graph",
                                 str(graph.override_file) if slot.default else
                                 f"{graph.graph_file} {slot.where}")]
    return history


def _apply(cfg: DeviceConfig, layer: str, source_of: Source, values: dict[str, Any]) -> None:
    for key, value in values.items():
        node, source = str(key), source_of(str(key))
        if node not in cfg.history:
            cfg.problems.append(f"{node} is not a parameter or camera node of "
                                f"{cfg.graph.app} (set by {source})")
            continue
        overridable = (cfg.graph.params[node].overridable if node in cfg.graph.params
                       else cfg.graph.cameras[node].overridable)
        if not overridable:
            cfg.problems.append(f"{node} is not overridable in {cfg.graph.app}'s graph "
                                f"(set by {source})")
            continue
        cfg.history[node].append(Setting(node, value, layer, source))


# ------------------------------------------------------------------------------ resolving


def _resolve_params(cfg: DeviceConfig) -> None:
    for name, param in cfg.graph.params.items():
        chain = cfg.history[name]
        value = chain[-1].value
        if value is None:  # unset: the graph's own value (or the bundle's default)
            value = next(s.value for s in reversed(chain) if s.layer == "graph")
        error = param_error(param.kind, value)
        if error is None and isinstance(value, float) and not math.isfinite(value):
            error = "expected a finite number"
        if error:
            shown = json.dumps(value) if not isinstance(value, str) else repr(value)[:80]
            cfg.problems.append(f"{name} ({param.kind}): {error}, got {shown} "
                                f"(set by {chain[-1].source})")
            continue
        cfg.params[name] = float(value) if param.kind == "float32" else value


def _spec_items(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value]
    return None


def _tag_matches(camera: dict[str, Any], selector: str) -> bool:
    key, sep, want = selector.partition("=")
    tags = camera.get("tags") or {}
    return key in tags and (not sep or str(tags[key]) == want)


def _bind(cfg: DeviceConfig, node: str, registry: Store) -> None:
    setting = cfg.history[node][-1]
    value = setting.value
    if value is None:
        value = next(s.value for s in reversed(cfg.history[node]) if s.layer == "graph")
    if value is None:
        if not cfg.graph.cameras[node].has_stream:
            cfg.problems.append(f"camera node {node} is bound to no camera (bind it with "
                                f"apps.{cfg.graph.app}.{node} in the inventory or -e {node}=NAME)")
        return
    items = _spec_items(value)
    if not items:
        cfg.problems.append(f"camera node {node}: expected camera names or tag:KEY[=VALUE], got "
                            f"{json.dumps(value)[:80]} (set by {setting.source})")
        return
    names: list[str] = []
    for item in items:
        names += _select(cfg, node, item, registry, setting.source)
    cfg.bindings[node] = list(dict.fromkeys(names))


def _select(cfg: DeviceConfig, node: str, item: str, registry: Store, source: str) -> list[str]:
    if item.startswith("tag:"):
        found = [c["name"] for c in cfg.device_cameras if _tag_matches(c, item[4:])]
        if not found:
            cfg.problems.append(f"camera node {node}: {item} matches no camera of "
                                f"{cfg.device} in the registry (set by {source})")
        return [n for n in found if _owned(cfg, node, registry.get_camera(n), n, source)]
    return [item] if _owned(cfg, node, registry.get_camera(item), item, source) else []


def _owned(cfg: DeviceConfig, node: str, camera: dict[str, Any] | None, name: str,
           source: str) -> bool:
    if camera is None:
        cfg.problems.append(f"camera {name} (node {node}) is not in the registry "
                            f"(set by {source}); add it with `fleet cameras import`")
        return False
    if camera["device"] != cfg.device:
        cfg.problems.append(f"camera {name} (node {node}) belongs to device {camera['device']}, "
                            f"not {cfg.device} (set by {source})")
        return False
    return True


def _camera_limit(project: Project) -> int:
    limits = Limits.from_config(dict(project.config.get("cameras") or {}))
    return min(int(limits.max_per_app), int(MAX_CAMERAS))  # the runtime refuses more than MAX_CAMERAS


@contextmanager
def _registry(project: Project, given: Store | None) -> Iterator[Store]:
    if given is not None:
        yield given
        return
    with open_registry(project) as registry:
        yield registry


def configure(project: Project, host: Host, bundle: Path | AppGraph, sets: list[str], *,
              registry: Store | None = None, inventory: Path | None = None) -> DeviceConfig:
    """`host`'s configuration of the application in `bundle` (a signed ``.app`` file).

    `sets` are the ``-e NODE=VALUE`` items (malformed: BadSetting, exit 2). With
    `inventory` (the inventory folder) sources name file:line. Refusals are data:
    see ``refusal()``.
    """
    graph = bundle if isinstance(bundle, AppGraph) else load_graph(bundle)
    pairs = parse_sets(sets)
    cfg = DeviceConfig(host.name, graph, _graph_layer(graph))
    lines = InventoryLines(inventory)
    for layer, source_of, values in inventory_layers(host, graph.app, lines):
        _apply(cfg, layer, source_of, values)
    for node, text in pairs:
        cli = {node: _cli_value(graph, node, text)} if node in cfg.history else {node: text}
        _apply(cfg, "cli", lambda n: f"-e {n}", cli)
    _resolve_params(cfg)
    with _registry(project, registry) as reg:
        cfg.device_cameras = [c for c in reg.list_cameras(devices=[host.name])
                              if c["device"] == host.name]
        for node in sorted(graph.cameras):
            _bind(cfg, node, reg)
        total = sum(len(n) for n in cfg.bindings.values())
        limit = _camera_limit(project)
        if total > limit:
            cfg.problems.append(f"{total} cameras bound to {graph.app}; at most {limit} per "
                                "application (fleet.yaml cameras.max_per_app)")
        if cfg.bindings and not cfg.problems:
            cfg._passwords = {c["name"]: reg.camera_password(c["name"])
                              for c in cfg.device_cameras}
    return cfg


def push_sealed(agent: Agent, cfg: DeviceConfig, *, timeout: float = 60.0) -> list[str]:
    """Send the device its cameras file on stdin (``fleet-agent cameras set -``); the camera
    names it now holds. Nothing to send (no camera bound): nothing is called."""
    sealed = cfg.sealed()
    if sealed is None:
        return []
    answer = agent.call("cameras", "set", "-", stdin=sealed, timeout=timeout)
    return [str(n) for n in answer.get("cameras") or []]


def configure_many(project: Project, hosts: list[Host], bundle: Path | AppGraph,
                   sets: list[str]) -> dict[str, DeviceConfig]:
    """Every host's configuration (a plan's): `-e` checked once before any device, the graph
    read once, one registry connection."""
    parse_sets(sets)
    graph = bundle if isinstance(bundle, AppGraph) else load_graph(bundle)
    with open_registry(project) as registry:
        return {h.name: configure(project, h, graph, sets, registry=registry) for h in hosts}


def flat(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary's final values, node -> value (a camera node -> its camera names)."""
    out = {n: p["value"] for n, p in (summary.get("parameters") or {}).items()}
    out.update({n: list(c["cameras"]) for n, c in (summary.get("cameras") or {}).items()})
    return out


def diff(before: dict[str, Any] | None, after: dict[str, Any]) -> list[dict[str, Any]]:
    """What changes between two summaries (the device's last one, or None): one row per node
    whose value differs, ``{"node", "from", "to", "layer"}``; the plan's parameter and
    camera diff."""
    old, new = flat(before or {}), flat(after)
    layers = {**{n: p["layer"] for n, p in (after.get("parameters") or {}).items()},
              **{n: c["layer"] for n, c in (after.get("cameras") or {}).items()}}
    return [{"node": n, "from": old.get(n), "to": new.get(n), "layer": layers.get(n)}
            for n in sorted(set(old) | set(new)) if old.get(n) != new.get(n)]
