"""The registry as an inventory (``-i registry``): devices selected in SQL, no YAML at all.

Each registered device becomes a host in group ``site-<site>`` with ``data``
``{site, serial, hardware, arch, tags}`` as a YAML inventory would give it
(registry tags ``{"canary": "", "ring": "2"}`` read back as ``["canary",
"ring=2"]``). ``--site``, ``--group site-<name>``, ``--tag`` and ``--limit``
become a WHERE clause, so a selection from 100,000 devices builds only the
hosts it names.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from fleet.errors import ConfigError
from fleet.inventory import Selection
from fleet.inventory_data import InventoryData
from fleet.project import Project

_COLUMNS = ("name", "site", "serial", "hardware", "arch", "hostname", "port", "tags")
_SITE_GROUP = "site-"


def registry_data(project: Project, selection: Selection) -> InventoryData:
    """The selected registry devices as inventory data; unknown --limit names are an error."""
    from fleet.registry import open_registry

    backend = (project.config.get("registry") or {}).get("backend", "sqlite")
    if backend == "sqlite" and not (project.state_dir / "registry.db").exists():
        # Opening would create an empty registry: say what to do instead.
        raise ConfigError("the registry has no devices yet",
                          fix="register them with `fleet devices register -i NAME`")
    registry = open_registry(project)
    try:
        conn = getattr(registry, "conn", None)
        if not isinstance(conn, sqlite3.Connection):
            raise ConfigError(f"the {registry.backend} registry cannot serve as an inventory",
                              fix="use a YAML inventory (-i NAME)")
        _check_limit(conn, selection)
        where, params = _where(selection)
        rows = conn.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM devices{where} ORDER BY name",  # noqa: S608
            params).fetchall()
    finally:
        registry.close()
    return _as_inventory(rows)


def _check_limit(conn: sqlite3.Connection, selection: Selection) -> None:
    if not selection.limit:
        return
    marks = ", ".join("?" * len(selection.limit))
    known = {r[0] for r in conn.execute(
        f"SELECT name FROM devices WHERE name IN ({marks})", selection.limit)}  # noqa: S608
    unknown = [n for n in selection.limit if n not in known]
    if unknown:
        raise ConfigError(f"unknown device(s) in {selection.limit_given_as}: {', '.join(unknown)}",
                          fix="check the names with `fleet inventory list -i registry`")


def _where(selection: Selection) -> tuple[str, list[Any]]:
    """SQL for the selection; each kind of selector narrows, names within one kind widen."""
    clauses: list[str] = []
    params: list[Any] = []

    def any_of(column: str, values: list[str]) -> None:
        clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
        params.extend(values)

    if selection.sites:
        any_of("site", list(selection.sites))
    if selection.groups:
        # Registry devices belong to their site's group only.
        any_of("site", [g[len(_SITE_GROUP):] for g in selection.groups
                        if g.startswith(_SITE_GROUP)] or [""])
    if selection.limit:
        any_of("name", list(selection.limit))
    if selection.tags:
        tests = []
        for tag in selection.tags:
            key, _, value = tag.partition("=")
            tests.append("(j.key = ? AND j.value = ?)")
            params.extend([key.strip(), value.strip()])
        clauses.append("EXISTS (SELECT 1 FROM json_each(devices.tags) AS j "  # noqa: S608
                       f"WHERE {' OR '.join(tests)})")  # placeholders only; values are params
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _as_inventory(rows: list[tuple[Any, ...]]) -> InventoryData:
    hosts: dict[str, Any] = {}
    sites: set[str] = set()
    for name, site, serial, hardware, arch, hostname, port, tags in rows:
        sites.add(site)
        data = {k: v for k, v in (("site", site), ("serial", serial), ("hardware", hardware),
                                  ("arch", arch)) if v is not None}
        data["tags"] = [k if v == "" else f"{k}={v}" for k, v in json.loads(tags).items()]
        hosts[name] = {"hostname": hostname, "port": port,
                       "groups": [_SITE_GROUP + site], "data": data}
    groups = {_SITE_GROUP + s: {"data": {"site": s}} for s in sorted(sites)}
    return InventoryData(hosts, groups, {})
