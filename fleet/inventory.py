"""Inventories (Nornir SimpleInventory folders) and the selectors every command shares.

An inventory is ``inventories/<name>/{hosts,groups,defaults}.yaml``; sites are
groups named ``site-<name>``; hosts carry ``data: {site, serial, hardware, arch,
tags}``. `select` returns a filtered Nornir object ready to run tasks.

>>> nr = select(project, Selection(inventory="lab", sites=["berlin"]))  # doctest: +SKIP
>>> sorted(nr.inventory.hosts)                                          # doctest: +SKIP
['berlin-01', 'berlin-02']
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nornir.core import Nornir
from nornir.core.inventory import ConnectionOptions, Host

from fleet.errors import ConfigError
from fleet.inventory_data import (
    PLUGIN_NAME,
    FleetInventory,
    InventoryData,
    cached,
    digest,
    store,
)
from fleet.project import Project

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,255}\Z"  # \Z: "$" would accept a trailing newline
ARCHES = ["aarch64", "x86_64", "armv7l", "armv6l"]

_DATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "site": {"type": "string", "pattern": NAME_PATTERN},
        "serial": {"type": "string", "minLength": 1, "maxLength": 64},
        "hardware": {"type": "string", "minLength": 1},
        "arch": {"enum": ARCHES},
        "tags": {"type": "array", "items": {"type": "string"}},
        "agent": {"type": "string", "description": "path of fleet-agent on the device"},
        "network": {"type": "object"},
        "apps": {"type": "object", "description": "per-application values (docs/app-config.md)",
                 "propertyNames": {"pattern": NAME_PATTERN},
                 "additionalProperties": {"type": ["object", "null"],
                                          "propertyNames": {"pattern": NAME_PATTERN}}},
        "power_cycle": {"type": "array", "minItems": 1, "items": {"type": "string"},
                        "description": "command run on the controller to power-cycle the device"
                                       " instead of `fleet-agent reboot` (see fleet/reboot.py)"},
    },
}
_HOST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "hostname": {"type": "string", "minLength": 1},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "username": {"type": "string"},
        "platform": {"type": "string"},
        "groups": {"type": "array", "items": {"type": "string"}},
        "data": _DATA_SCHEMA,
        "connection_options": {"type": "object"},
    },
}
HOSTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "propertyNames": {"pattern": NAME_PATTERN},
    "additionalProperties": {
        **_HOST_SCHEMA,
        "required": ["hostname", "data"],
        "properties": {
            **_HOST_SCHEMA["properties"],
            "data": {**_DATA_SCHEMA, "required": ["site", "hardware", "arch"]},
        },
    },
}
GROUPS_SCHEMA: dict[str, Any] = {
    "type": ["object", "null"],
    "additionalProperties": _HOST_SCHEMA,
}
DEFAULTS_SCHEMA: dict[str, Any] = _HOST_SCHEMA
_SCHEMAS = {"hosts.yaml": HOSTS_SCHEMA, "groups.yaml": GROUPS_SCHEMA,
            "defaults.yaml": DEFAULTS_SCHEMA}
_SCHEMA_DIGEST = json.dumps(list(_SCHEMAS.values()), sort_keys=True)
# Inventories may be larger than hand-written config (MAX_YAML_BYTES): aliases are
# refused, so memory stays linear in the file (about 19 MB for 100,000 devices).
INVENTORY_MAX_BYTES = 64 << 20
REGISTRY_INVENTORY = "registry"  # `-i registry`: the devices in the registry, no YAML


@dataclass(frozen=True)
class Selection:
    """Which devices a command targets; empty fields select everything."""

    inventory: str | None = None
    sites: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    limit: tuple[str, ...] = field(default=())
    # What the user typed the names as, for messages: a command taking one DEVICE
    # argument must not blame a --limit flag that was never given.
    limit_given_as: str = field(default="--limit", compare=False)

    @classmethod
    def of(cls, inventory: str | None = None, site: Iterable[str] | None = None,
           group: Iterable[str] | None = None, tag: Iterable[str] | None = None,
           limit: str | None = None, *, limit_given_as: str = "--limit") -> Selection:
        names = tuple(n.strip() for n in (limit or "").split(",") if n.strip())
        return cls(inventory, tuple(site or ()), tuple(group or ()), tuple(tag or ()), names,
                   limit_given_as)


def inventory_dir(project: Project, name_or_path: str | None) -> Path:
    """An inventory given by name (``inventories/<name>``) or by path."""
    name = name_or_path or str(project.config.get("inventory", "lab"))
    candidate = Path(name)
    if candidate.is_dir() and (candidate / "hosts.yaml").exists():
        return candidate.resolve()
    path = project.inventories / name
    if not (path / "hosts.yaml").exists():
        known = sorted(p.name for p in project.inventories.glob("*") if (p / "hosts.yaml").exists())
        hint = "run `fleet lab up` to create the lab inventory" if name == "lab" else (
            f"known inventories: {', '.join(known) or 'none'}")
        above = _enclosing_project(project.root, name)
        if above is not None:
            # `fleet lab up` here would start a second lab inside the project: point up instead.
            hint = f"the project is {above}: cd there, or pass --project {above}"
        raise ConfigError(f"inventory '{name}' not found", where=str(path), fix=hint)
    return path


def _enclosing_project(root: Path, name: str) -> Path | None:
    """The nearest folder above ``root`` that holds inventory ``name`` (a user in a subfolder)."""
    for parent in root.parents:
        if (parent / "inventories" / name / "hosts.yaml").exists():
            return parent
    return None


def check(directory: Path, *, cache_dir: Path | None = None) -> list[str]:
    """Every schema problem in an inventory folder, each as ``file:line: $.path: message``."""
    return read(directory, cache_dir=cache_dir)[0]


def read(directory: Path, *, cache_dir: Path | None = None) -> tuple[list[str], InventoryData | None]:
    """The folder's problems, and its data when there are none; each file is parsed once.

    The fast loader reads what it can; a file it declines, and any file with a
    problem, is read again the careful way for the line numbers of the report.
    """
    from fleet.textfiles import read_text_capped

    problems: list[str] = []
    texts: dict[str, str | None] = {}
    for fname in _SCHEMAS:
        path = directory / fname
        if not path.exists():
            texts[fname] = None
            if fname == "hosts.yaml":
                problems.append(f"{path}: missing")
            continue
        try:
            texts[fname] = read_text_capped(path, INVENTORY_MAX_BYTES)
        except ConfigError as exc:
            problems.append(exc.line())
    key = None if problems else digest(texts, _SCHEMA_DIGEST)
    hit = cached(cache_dir, directory, key) if cache_dir and key else None
    if hit is not None:
        return [], hit
    docs: dict[str, _Doc] = {}
    for fname, schema in _SCHEMAS.items():
        text = texts.get(fname)
        if text is None:
            continue
        doc = _Doc(directory / fname, text)
        problems.extend(doc.problems(schema, empty_ok=fname != "hosts.yaml"))
        docs[fname] = doc
    if "groups.yaml" in texts:  # absent or read: an unreadable one is reported already
        problems.extend(_group_references(docs))
    if problems:
        return problems, None
    data = InventoryData(*(docs[f].plain or {} if f in docs else {} for f in _SCHEMAS))
    if cache_dir and key and all(d.fast for d in docs.values()):
        store(cache_dir, directory, key, data)
    return [], data


class _Doc:
    """One inventory file: plain data from the fast loader, ruamel's nodes only when needed."""

    def __init__(self, path: Path, text: str) -> None:
        from fleet.fastyaml import load_plain
        from fleet.schema import plain

        self.path, self.text = path, text
        self.fast, self.plain = load_plain(text)
        self._careful: Any = None
        self.error: str | None = None
        if not self.fast:
            self.plain = plain(self.careful())

    def careful(self) -> Any:
        """ruamel's round-trip document (it carries line numbers); parsed on first use."""
        from fleet.schema import load_yaml_text

        if self._careful is None and self.error is None:
            try:
                self._careful = load_yaml_text(self.text, self.path)
            except ConfigError as exc:
                self.error = exc.line()
        return self._careful

    def problems(self, schema: dict[str, Any], *, empty_ok: bool) -> list[str]:
        from jsonschema import Draft202012Validator

        from fleet.schema import schema_errors

        if self.error:
            return [self.error]
        if self.plain is None and empty_ok:
            return []
        if not any(True for _ in Draft202012Validator(schema).iter_errors(self.plain)):
            return []
        doc = self.careful()
        return [self.error] if self.error else schema_errors(doc, schema, self.path)


def _group_references(docs: dict[str, _Doc]) -> list[str]:
    hosts_doc, groups_doc = docs.get("hosts.yaml"), docs.get("groups.yaml")
    if hosts_doc is None or hosts_doc.error or (groups_doc and groups_doc.error):
        return []  # read() has reported the file already
    hosts = hosts_doc.plain
    if not isinstance(hosts, dict):
        return []
    groups = groups_doc.plain if groups_doc else {}
    known = set(groups) if isinstance(groups, dict) else set()
    out = []
    for name, host in hosts.items():
        listed = host.get("groups") if isinstance(host, dict) else None
        for group in listed if isinstance(listed, list) else []:
            if isinstance(group, str) and group not in known:
                out.append(f"{hosts_doc.path}:{_groups_line(hosts_doc, name)}: $.{name}.groups: "
                           f"unknown group {group!r} (define it in groups.yaml)")
    return out


def _groups_line(doc: _Doc, name: str) -> int | str:
    host = (doc.careful() or {}).get(name)
    listed: Any = host.get("groups") if isinstance(host, dict) else None
    return int(listed.lc.line) + 1 if hasattr(listed, "lc") else "?"


def load(project: Project, name_or_path: str | None, *, num_workers: int | None = None,
         selection: Selection | None = None) -> Nornir:
    """A Nornir object over the whole inventory, validated first, with our SSH settings.

    ``registry`` as the inventory name reads the devices from the registry
    instead, narrowed by `selection` in SQL.
    """
    with bulk_allocation():
        if _is_registry(name_or_path or str(project.config.get("inventory", "lab"))):
            from fleet.inventory_registry import registry_data

            data = registry_data(project, selection or Selection())
        else:
            data = _folder_data(project, inventory_dir(project, name_or_path))
        # Failures are data (Results); keep nornir from printing tracebacks via logging's
        # last resort.
        logging.getLogger("nornir").addHandler(logging.NullHandler())
        nr = _nornir(data, num_workers or int(project.config["concurrency"]))
        # Through the defaults, as Nornir resolves them: reading each host's resolved
        # username to fill it in costs more than the rest of building 10,000 hosts.
        if not nr.inventory.defaults.username:
            nr.inventory.defaults.username = project.config["ssh"]["username"]
        shared = _ssh_extras(project)
        for host in nr.inventory.hosts.values():
            _apply_ssh_settings(host, shared)
    return nr


def _nornir(data: InventoryData, num_workers: int) -> Nornir:
    """What InitNornir builds, from our own plugins. InitNornir first loads every Nornir
    plugin any installed package declares (three scans of all package metadata), which
    fleet never uses; its own connection plugin registers on import (fleet.transport)."""
    from nornir.core.configuration import Config
    from nornir.core.state import GlobalState
    from nornir.plugins.runners import ThreadedRunner

    config = Config.from_dict(inventory={"plugin": PLUGIN_NAME},
                              runner={"plugin": "threaded",
                                      "options": {"num_workers": num_workers}},
                              logging={"enabled": False})
    return Nornir(inventory=FleetInventory(data).load(), runner=ThreadedRunner(num_workers),
                  config=config, data=GlobalState(dry_run=False))


@contextmanager
def bulk_allocation() -> Iterator[None]:
    """Pause the cyclic garbage collector while an inventory is parsed and built.

    Each of the hundreds of thousands of new dicts and hosts counts towards the next
    collection, and each full collection walks all of them again: at 100,000 devices
    that was two thirds of the time. Nothing built here is cyclic garbage.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _is_registry(name: str) -> bool:
    return name == REGISTRY_INVENTORY


def _folder_data(project: Project, directory: Path) -> InventoryData:
    problems, data = read(directory, cache_dir=project.state_dir / "cache")
    if problems or data is None:
        more = f" (and {len(problems) - 1} more; run `fleet inventory check`)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)
    return data


def _ssh_extras(project: Project) -> dict[str, Any]:
    """The SSH settings every host shares (worked out once, not per host)."""
    from fleet.transport import controller_key

    ssh = project.config["ssh"]
    return {
        "known_hosts": str(project.known_hosts),
        "key_file": ssh.get("key_file") or str(controller_key(project)),
        "connect_timeout": ssh["connect_timeout"],
        "command_timeout": ssh["command_timeout"],
        "keepalive": ssh["keepalive"],
    }


def _apply_ssh_settings(host: Host, shared: dict[str, Any]) -> None:
    from fleet.transport import CONNECTION_NAME

    extras = {"device": host.name, **shared}
    host.connection_options[CONNECTION_NAME] = ConnectionOptions(extras=extras)


def select(project: Project, selection: Selection, *, num_workers: int | None = None,
           allow_empty: bool = False) -> Nornir:
    """The Nornir object filtered to `selection`. An unknown `--limit` name is an error."""
    nr = load(project, selection.inventory, num_workers=num_workers, selection=selection)
    # The registry inventory is narrowed in SQL already and checks --limit names there.
    registry = _is_registry(selection.inventory or str(project.config.get("inventory", "lab")))
    unknown = [] if registry else [n for n in selection.limit if n not in nr.inventory.hosts]
    if unknown:
        raise ConfigError(f"unknown device(s) in {selection.limit_given_as}: {', '.join(unknown)}",
                          fix="check the names with `fleet inventory list`")
    everything = not (selection.sites or selection.groups or selection.tags or selection.limit)
    chosen = nr if everything else nr.filter(filter_func=lambda h: matches(h, selection))
    if not chosen.inventory.hosts and not allow_empty:
        raise ConfigError("the selection matched no devices",
                          fix="check --site/--group/--tag/--limit against `fleet inventory list`")
    return chosen


def matches(host: Host, selection: Selection) -> bool:
    data = host.data
    tags = set(data.get("tags") or ())
    return (
        (not selection.sites or data.get("site") in selection.sites)
        and (not selection.groups or any(host.has_parent_group(g) for g in selection.groups))
        and (not selection.tags or bool(tags & set(selection.tags)))
        and (not selection.limit or host.name in selection.limit)
    )


def describe(host: Host) -> dict[str, Any]:
    """The `fleet inventory list --json` shape of one host."""
    return {
        "name": host.name,
        "site": host.data.get("site"),
        "hostname": host.hostname,
        "port": host.port or 22,
        "groups": [g.name for g in host.groups],
        "data": dict(host.data.items()),
    }
