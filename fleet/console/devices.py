"""The devices table: registry rows joined with inventory groups and the latest health,
filtered, sorted and paged on the server.

The registry stays the one source of truth: `DeviceIndex` re-reads it when
the store changed (the SQLite file's size and mtime, checked on each request)
or, for a store it cannot stat (AWS), after a few seconds. Everything else
here is a pure function of that snapshot and the query, so a 10,000-device
page costs a filter and a slice, not a database scan.

>>> q = Query.from_params({"site": "berlin", "verdict": "failing", "page": "2"})
>>> q.to_params()
{'site': 'berlin', 'verdict': 'failing', 'page': '2'}
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from fleet.project import Project

PAGE_SIZE = 50
SORTS = ("name", "site", "software", "verdict", "status", "last_seen")
UNCHECKED = "unchecked"  # no health reading yet for this device
FILTERS = ("site", "group", "tag", "verdict", "version", "app", "q")


@dataclass(frozen=True)
class Query:
    """One table view; every field lives in the URL so a view can be bookmarked."""

    site: str = ""
    group: str = ""
    tag: str = ""
    verdict: str = ""
    version: str = ""
    app: str = ""
    q: str = ""
    sort: str = "name"
    desc: bool = False
    page: int = 1

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> Query:
        text = {k: str(params.get(k, ""))[:200].strip() for k in FILTERS}
        sort = str(params.get("sort", "name"))
        try:
            page = max(1, min(10**6, int(params.get("page", 1))))
        except ValueError:
            page = 1
        return cls(**text, sort=sort if sort in SORTS else "name",
                   desc=params.get("desc") in ("1", "true"), page=page)

    def to_params(self, **changes: Any) -> dict[str, str]:
        """The non-default fields as URL parameters (with `changes` applied)."""
        chosen = replace(self, **changes)
        out = {}
        for f in fields(self):
            value = getattr(chosen, f.name)
            if value != f.default:
                out[f.name] = "1" if value is True else str(value)
        return out


@dataclass
class Row:
    name: str
    site: str
    status: str
    software: str
    tags: dict[str, str]
    groups: list[str]
    last_seen: str
    verdict: str = UNCHECKED
    apps: list[str] = field(default_factory=list)
    tag_words: frozenset[str] = frozenset()  # "key" and "key=value" of each tag

    def __post_init__(self) -> None:
        self.tag_words = frozenset(self.tags) | {f"{k}={v}" for k, v in self.tags.items()}


@dataclass
class Page:
    rows: list[Row]
    total: int
    page: int
    pages: int
    facets: dict[str, list[str]]


def _tests(q: Query) -> list[Callable[[Row], bool]]:
    """One test per filter the query sets (a page with one filter pays for one test a row)."""
    tests: list[Callable[[Row], bool]] = []
    site, group, tag, verdict, version, app = q.site, q.group, q.tag, q.verdict, q.version, q.app
    if site:
        tests.append(lambda r: r.site == site)
    if group:
        tests.append(lambda r: group in r.groups)
    if tag:
        tests.append(lambda r: tag in r.tag_words)
    if verdict:
        tests.append(lambda r: r.verdict == verdict)
    if version:
        tests.append(lambda r: r.software == version)
    if app:
        tests.append(lambda r: app in r.apps)
    if q.q:
        needle = q.q.lower()
        tests.append(lambda r: needle in r.name.lower())
    return tests


class Table:
    """One snapshot of the rows, with what every query needs worked out once per snapshot:
    the filter choices and each sort order (pages then cost a filter and a slice)."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows
        self.facets = facets(rows)
        self._orders: dict[tuple[str, bool], list[Row]] = {}

    @functools.cached_property
    def sites(self) -> dict[str, dict[str, Any]]:
        """Per site: device count and Counters of verdicts, versions and applications."""
        out: dict[str, dict[str, Any]] = {}
        for row in self.rows:
            site = out.setdefault(row.site, {"devices": 0, "verdicts": Counter(),
                                             "versions": Counter(), "apps": Counter()})
            site["devices"] += 1
            site["verdicts"][row.verdict] += 1
            site["versions"][row.software or "unknown"] += 1
            site["apps"].update(row.apps)
        return dict(sorted(out.items()))

    @functools.cached_property
    def versions(self) -> Counter[str]:
        return Counter(r.software or "unknown" for r in self.rows)

    @functools.cached_property
    def apps(self) -> Counter[str]:
        return Counter(a for r in self.rows for a in r.apps)

    def ordered(self, sort: str, desc: bool) -> list[Row]:
        key = (sort, desc)
        if key not in self._orders:
            self._orders[key] = sorted(self.rows, key=lambda r: (str(getattr(r, sort)), r.name),
                                       reverse=desc)
        return self._orders[key]


def run_query(table: Table, q: Query, page_size: int = PAGE_SIZE) -> Page:
    """Filter, sort and cut one page."""
    ordered, tests = table.ordered(q.sort, q.desc), _tests(q)
    if len(tests) == 1:
        kept = list(filter(tests[0], ordered))
    else:
        kept = [r for r in ordered if all(t(r) for t in tests)] if tests else ordered
    pages = max(1, -(-len(kept) // page_size))
    page = min(q.page, pages)
    start = (page - 1) * page_size
    return Page(kept[start:start + page_size], len(kept), page, pages, table.facets)


def facets(rows: list[Row]) -> dict[str, list[str]]:
    """The values each filter can take, for the filter form's choices."""
    return {
        "site": sorted({r.site for r in rows}),
        "group": sorted({g for r in rows for g in r.groups}),
        "tag": sorted({t for r in rows for t in r.tag_words}),
        "verdict": sorted({r.verdict for r in rows}),
        "version": sorted({r.software for r in rows if r.software}),
        "app": sorted({a for r in rows for a in r.apps}),
    }


def to_row(device: Mapping[str, Any], groups: list[str]) -> Row:
    return Row(name=str(device["name"]), site=str(device.get("site") or ""),
               status=str(device.get("status") or ""),
               software=str(device.get("software_current") or ""),
               tags=dict(device.get("tags") or {}), groups=groups,
               last_seen=str(device.get("last_seen") or ""))


def inventory_groups(project: Project) -> dict[str, list[str]]:
    """Device name -> the groups it belongs to (with parents), from the default inventory.
    No inventory (a registry filled another way) means no groups, not an error."""
    from fleet import inventory as inv
    from fleet.errors import FleetError

    try:
        nr = inv.load(project, None)
    except FleetError:
        return {}
    out = {}
    for name, host in nr.inventory.hosts.items():
        seen: list[str] = []
        todo = list(host.groups)
        while todo:
            group = todo.pop(0)
            if group.name not in seen:
                seen.append(group.name)
                todo.extend(group.groups)
        out[name] = seen
    return out


def _stamp(paths: list[Path]) -> tuple[tuple[int, int], ...]:
    out = []
    for path in paths:
        try:
            st = path.stat()
            out.append((st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((-1, -1))
    return tuple(out)


class DeviceIndex:
    """Registry devices as table rows, re-read only when the store changed."""

    TTL_S = 5.0  # for stores whose change we cannot see on disk

    def __init__(self, project: Project, read: Callable[[], list[dict[str, Any]]]) -> None:
        self.project, self._read = project, read
        state = project.state_dir
        inv_dir = project.inventories / str(project.config.get("inventory") or "lab")
        self._watched = [state / "registry.db", state / "registry.db-wal",
                         inv_dir / "hosts.yaml", inv_dir / "groups.yaml"]
        self._lock = threading.Lock()
        self._stamp: Any = None
        self._at = 0.0
        self._devices: list[dict[str, Any]] = []
        self._groups: dict[str, list[str]] = {}
        self._table: Table | None = None
        self._generation = 0
        self._table_key: tuple[int, int] | None = None

    def devices(self) -> list[dict[str, Any]]:
        with self._lock:
            stamp = _stamp(self._watched)
            stale = time.monotonic() - self._at > self.TTL_S and stamp[0] == (-1, -1)
            if stamp != self._stamp or stale:
                self._devices = self._read()
                self._generation += 1
                self._groups = inventory_groups(self.project)
                self._stamp, self._at = stamp, time.monotonic()
            return self._devices

    def table(self, health: Callable[[], Mapping[str, tuple[str, list[str]]]],
              health_version: int) -> Table:
        """The rows with each device's verdict and applications from `health()`; rebuilt only
        when the registry or the health board (`health_version`) changed."""
        devices = self.devices()
        with self._lock:
            key = (self._generation, health_version)
            if self._table is None or self._table_key != key:
                summary = health()
                rows = []
                for device in devices:
                    row = to_row(device, self._groups.get(str(device["name"]), []))
                    if row.name in summary:
                        row.verdict, row.apps = summary[row.name]
                    rows.append(row)
                self._table, self._table_key = Table(rows), key
            return self._table
