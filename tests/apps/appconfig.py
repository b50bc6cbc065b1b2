"""A configurable application, an inventory with every layer, and cameras in the registry.

Shared by the per-device configuration tests (tests/apps/test_app_config*.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from appkit import PASSPHRASE
from panorama_apps import write_app

from fleet import inventory
from fleet.apps import build as builder
from fleet.project import Project
from fleet.registry import Camera, open_registry

PASSWORD = "Pl4nted-s3cret-9f2c"  # the must-show: it appears nowhere but the device's file
EXTRA_PARAMS: list[dict[str, Any]] = [
    {"name": "label_param", "interface": "string", "value": "default", "overridable": True},
    {"name": "max_tracks_param", "interface": "int32", "value": 4, "overridable": True},
    {"name": "draw_param", "interface": "boolean", "value": False, "overridable": True},
    {"name": "locked_param", "interface": "float32", "value": 1.5, "overridable": False},
]

def build_app(project: Project, src: Path, version: str = "1.0.0") -> Path:
    """The tracker sample with a parameter of each type (one not overridable), signed."""
    app = write_app(src, "tracker")
    gpath = app / "graphs" / app.name / "graph.json"
    graph = json.loads(gpath.read_text())
    graph["nodeGraph"]["nodes"] += EXTRA_PARAMS
    gpath.write_text(json.dumps(graph, indent=1))
    return builder.build(project, app, passphrase=PASSPHRASE.encode(), version=version).path


def write_inventory(project: Project, apps: dict[str, dict[str, Any]]) -> Path:
    """inventories/cfg: berlin-01/02 (site berlin; groups people, its parent staff, then
    night), munich-01; `apps` holds each layer's ``apps.tracker_plain`` values: keys
    defaults, people, staff, night, site, berlin-01."""
    folder = project.root / "inventories" / "cfg"
    folder.mkdir(parents=True, exist_ok=True)

    def data(key: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        out = dict(extra or {})
        if key in apps:
            out["apps"] = {"tracker_plain": apps[key]}
        return out

    def host(site: str, name: str) -> dict[str, Any]:
        groups = [f"site-{site}"] + (["people", "night"] if site == "berlin" else [])
        return {"hostname": "127.0.0.1", "port": 22, "groups": groups,
                "data": data(name, {"site": site, "hardware": "jetson", "arch": "aarch64"})}

    hosts = {n: host(n.split("-")[0], n) for n in ("berlin-01", "berlin-02", "munich-01")}
    groups = {"people": {"groups": ["staff"], "data": data("people")},
              "staff": {"data": data("staff")}, "night": {"data": data("night")},
              "site-berlin": {"data": data("site", {"site": "berlin"})},
              "site-munich": {"data": {"site": "munich"}}}
    (folder / "hosts.yaml").write_text(_yaml(hosts))
    (folder / "groups.yaml").write_text(_yaml(groups))
    (folder / "defaults.yaml").write_text(_yaml({"data": data("defaults")}))
    return folder


def _yaml(doc: Any) -> str:
    from io import StringIO

    from ruamel.yaml import YAML

    out = StringIO()
    YAML(typ="safe", pure=True).dump(doc, out)
    return out.getvalue()


def host_of(project: Project, folder: Path, name: str) -> Any:
    return inventory.load(project, str(folder)).inventory.hosts[name]


def add_cameras(project: Project, url: str = "rtsp://127.0.0.1:8554/cam") -> None:
    """Cameras of berlin-01 (two tagged entrance, one reserved for another app), berlin-02's
    and munich-01's; every one with the planted password."""
    with open_registry(project) as reg:
        for name, site in (("berlin-01", "berlin"), ("berlin-02", "berlin"),
                           ("munich-01", "munich")):
            reg.upsert_device(name, site=site, hardware="jetson", arch="aarch64")
        cams = [Camera("b1-door", "berlin-01", url, "admin", PASSWORD, tags={"entrance": ""}),
                Camera("b1-gate", "berlin-01", url, "admin", PASSWORD,
                       tags={"entrance": "", "floor": "2"}),
                Camera("b1-yard", "berlin-01", url, "admin", PASSWORD, tags={"floor": "1"}),
                Camera("b1-other", "berlin-01", url, "admin", PASSWORD, tags={"app": "counter"}),
                Camera("b2-door", "berlin-02", url, "admin", PASSWORD, tags={"entrance": ""}),
                Camera("m1-door", "munich-01", url, "admin", PASSWORD)]
        cams += [Camera(f"b1-extra{i}", "berlin-01", url, "admin", PASSWORD, tags={"many": ""})
                 for i in range(8)]
        reg.write_cameras(cams, [])
