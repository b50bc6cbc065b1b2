"""Inventories (Nornir SimpleInventory folders) and the selectors every command shares.

An inventory is ``inventories/<name>/{hosts,groups,defaults}.yaml``; sites are
groups named ``site-<name>``; hosts carry ``data: {site, serial, hardware, arch,
tags}``. `select` returns a filtered Nornir object ready to run tasks.

>>> nr = select(project, Selection(inventory="lab", sites=["berlin"]))  # doctest: +SKIP
>>> sorted(nr.inventory.hosts)                                          # doctest: +SKIP
['berlin-01', 'berlin-02']
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nornir import InitNornir
from nornir.core import Nornir
from nornir.core.inventory import ConnectionOptions, Host

from fleet.errors import ConfigError
from fleet.project import Project
from fleet.schema import load_yaml, schema_errors

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


def check(directory: Path) -> list[str]:
    """Every schema problem in an inventory folder, each as ``file:line: $.path: message``."""
    problems: list[str] = []
    for fname, schema in (("hosts.yaml", HOSTS_SCHEMA), ("groups.yaml", GROUPS_SCHEMA),
                          ("defaults.yaml", DEFAULTS_SCHEMA)):
        path = directory / fname
        if not path.exists():
            if fname == "hosts.yaml":
                problems.append(f"{path}: missing")
            continue
        try:
            doc = load_yaml(path)
        except ConfigError as exc:
            problems.append(exc.line())
            continue
        if doc is None and fname != "hosts.yaml":
            continue
        problems.extend(schema_errors(doc, schema, path))
    problems.extend(_group_references(directory))
    return problems


def _group_references(directory: Path) -> list[str]:
    try:
        hosts = load_yaml(directory / "hosts.yaml") if (directory / "hosts.yaml").exists() \
            else None
        groups_path = directory / "groups.yaml"
        groups = load_yaml(groups_path) if groups_path.exists() else {}
    except ConfigError:
        return []  # check() has reported the file already
    if not isinstance(hosts, dict):
        return []
    known = set(groups) if isinstance(groups, dict) else set()
    out = []
    for name, host in hosts.items():
        listed = host.get("groups") if isinstance(host, dict) else None
        for group in listed if isinstance(listed, list) else []:
            if isinstance(group, str) and group not in known:
                line = host["groups"].lc.line + 1 if hasattr(host.get("groups"), "lc") else "?"
                out.append(f"{directory / 'hosts.yaml'}:{line}: $.{name}.groups: "
                           f"unknown group {group!r} (define it in groups.yaml)")
    return out


def load(project: Project, name_or_path: str | None, *, num_workers: int | None = None) -> Nornir:
    """A Nornir object over the whole inventory, validated first, with our SSH settings."""
    directory = inventory_dir(project, name_or_path)
    problems = check(directory)
    if problems:
        more = f" (and {len(problems) - 1} more; run `fleet inventory check`)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)
    # Failures are data (Results); keep nornir from printing tracebacks via logging's last resort.
    logging.getLogger("nornir").addHandler(logging.NullHandler())
    nr = InitNornir(
        runner={"plugin": "threaded",
                "options": {"num_workers": num_workers or int(project.config["concurrency"])}},
        inventory={"plugin": "SimpleInventory", "options": {
            "host_file": str(directory / "hosts.yaml"),
            "group_file": str(directory / "groups.yaml"),
            "defaults_file": str(directory / "defaults.yaml"),
        }},
        logging={"enabled": False},
    )
    for host in nr.inventory.hosts.values():
        _apply_ssh_settings(project, host)
    return nr


def _apply_ssh_settings(project: Project, host: Host) -> None:
    from fleet.transport import CONNECTION_NAME, controller_key

    ssh = project.config["ssh"]
    host.username = host.username or ssh["username"]
    extras = {
        "device": host.name,
        "known_hosts": str(project.known_hosts),
        "key_file": ssh.get("key_file") or str(controller_key(project)),
        "connect_timeout": ssh["connect_timeout"],
        "command_timeout": ssh["command_timeout"],
        "keepalive": ssh["keepalive"],
    }
    host.connection_options[CONNECTION_NAME] = ConnectionOptions(extras=extras)


def select(project: Project, selection: Selection, *, num_workers: int | None = None,
           allow_empty: bool = False) -> Nornir:
    """The Nornir object filtered to `selection`. An unknown `--limit` name is an error."""
    nr = load(project, selection.inventory, num_workers=num_workers)
    unknown = [n for n in selection.limit if n not in nr.inventory.hosts]
    if unknown:
        raise ConfigError(f"unknown device(s) in {selection.limit_given_as}: {', '.join(unknown)}",
                          fix="check the names with `fleet inventory list`")
    chosen = nr.filter(filter_func=lambda h: matches(h, selection))
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
