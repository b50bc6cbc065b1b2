"""Camera credentials reach the device sealed: `fleet-agent cameras set -` writes a 0600
cameras.json, and the supervised runtime finds a camera node bound to camera NAMES there.

Real parts: the controller's `configure` on a signed bundle of the colour example and a
registry camera behind RTSP basic auth on the project's RTSP test server, the agent in a
subprocess, `fleet-agent app run` supervising `fleet-runtime run`.
"""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
from device_apps import agent, app_status, send_app

PLANTED = "Dev1ce-Planted-7e1a"


def _set(root: Path, doc: object) -> tuple[int, dict]:  # type: ignore[type-arg]
    return agent(root, "cameras", "set", "-", stdin=json.dumps(doc).encode())


def test_set_writes_0600_atomically_and_answers_names_only(tmp_path: Path) -> None:
    doc = {"cameras": [{"name": "door", "url": "rtsp://10.0.0.7/s1", "username": "admin",
                        "password": PLANTED}]}
    code, answer = _set(tmp_path, doc)
    assert code == 0 and answer["cameras"] == ["door"] and answer["changed"], answer
    path = tmp_path / "etc/fleet/cameras.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["cameras"][0]["password"] == PLANTED
    assert PLANTED not in json.dumps(answer)
    assert [p.name for p in path.parent.iterdir()] == ["cameras.json"]  # no temp file left
    code, again = _set(tmp_path, doc)
    assert code == 0 and not again["changed"]
    code, listed = agent(tmp_path, "cameras", "list")
    assert code == 0 and listed["cameras"] == ["door"] and listed["mode"] == "0o600"
    log = tmp_path / "var/log/fleet/agent.log"
    assert PLANTED not in (log.read_text() if log.exists() else "")


@pytest.mark.parametrize("stdin", [b"", b"not json", b'{"cameras": {}}',
                                   b'{"cameras": [{"name": "a b", "url": "x"}]}',
                                   b'{"cameras": [{"name": "a", "url": "x", "password": 7}]}',
                                   b'{"cameras": [{"name": "a", "url": "x", "pw": "' +
                                   PLANTED.encode() + b'"}]}'])
def test_a_bad_document_is_refused_and_changes_nothing(tmp_path: Path, stdin: bytes) -> None:
    code, answer = agent(tmp_path, "cameras", "set", "-", stdin=stdin)
    assert code == 2 and answer["error"]["code"] == "bad-request", answer
    assert PLANTED not in json.dumps(answer)
    assert not (tmp_path / "etc/fleet/cameras.json").exists()


def test_the_runtime_streams_a_camera_bound_by_name_through_the_sealed_file(
        tmp_path: Path, color_app: Path, rtsp_server, monkeypatch) -> None:
    pytest.importorskip("onnxruntime")
    from fleet_runtime.apps import supervise
    from fleet_runtime.layout import Layout
    from nornir.core.inventory import Defaults, Host
    from test_device_apps_health import HEALTH, start_supervisor, stop

    from fleet import firmware
    from fleet.apps import build as builder
    from fleet.apps.config import configure
    from fleet.project import Project
    from fleet.registry import Camera, open_registry

    monkeypatch.setenv("FLEET_RELEASE_PASSPHRASE", "pw-for-tests")
    (tmp_path / "project").mkdir()
    project = Project.locate(tmp_path / "project")
    firmware.keygen(project, passphrase=b"pw-for-tests")
    bundle = builder.build(project, color_app, passphrase=b"pw-for-tests", version="1.0.0").path
    with open_registry(project) as reg:
        reg.upsert_device("dev-1", site="lab", hardware="jetson", arch="x86_64")
        reg.write_cameras([Camera("door", "dev-1", rtsp_server.url("secure"),
                                  rtsp_server.username, rtsp_server.password)], [])
    host = Host("dev-1", data={"site": "lab"}, defaults=Defaults())
    cfg = configure(project, host, bundle, ["camera_node=door", "threshold_param=0.5"])
    assert cfg.refusal() is None and cfg.cameras() == {"camera_node": ["door"]}

    root = tmp_path / "dev"
    (root / "etc/fleet").mkdir(parents=True)
    app = tmp_path / "color-configured"
    shutil.copytree(color_app, app)
    for name, data in cfg.files().items():
        (app / name).write_bytes(data)
    manifest = send_app(root, app, "color", "1.0.0", tmp_path, health=HEALTH)
    code, doc = agent(root, "app", "stage", str(manifest))
    assert code == 0, doc
    code, doc = agent(root, "cameras", "set", "-", stdin=cfg.sealed())
    assert code == 0 and doc["cameras"] == ["door"], doc
    assert stat.S_IMODE((root / "etc/fleet/cameras.json").stat().st_mode) == 0o600
    sup = start_supervisor(root, "color")
    try:
        code, doc = agent(root, "app", "activate", "color")
        assert code == 0 and doc["app"]["state"] == "done", doc
        assert doc["app"]["gate"]["fps"]["door"] >= 1, doc
        record = supervise.read_record(Layout(root), "color") or {}
        cmdline = Path(f"/proc/{record['child']}/cmdline").read_bytes()
        assert rtsp_server.password.encode() not in cmdline
        assert app_status(root, "color")["committed"] == "1.0.0"
        _health_shows_the_app(root, rtsp_server.password)
    finally:
        stop(sup)
    log = (root / "var/log/fleet/apps/color.log").read_text()
    assert rtsp_server.password not in log


def _health_shows_the_app(root: Path, password: str) -> None:
    """`fleet-agent health` (the sweep's one call) carries the app's version, state, fps and
    cameras; the controller's `fleet health` reads them from that answer."""
    from fleet.cli.health import _apps
    from fleet.health import DeviceHealth, apps_of

    (root / "etc/fleet/device.json").write_text('{"name": "dev-1"}')
    code, answer = agent(root, "health")
    assert code == 0 and "checks" in answer, answer
    app = next(c for c in answer["checks"] if c["name"] == "app:color")
    assert (app["version"], app["state"], app["status"]) == ("1.0.0", "done", "ok"), app
    assert app["fps"] > 0
    shown = apps_of(answer["checks"])
    assert shown == [{"name": "color", "version": "1.0.0", "state": "done", "fps": app["fps"],
                      "cameras": {"door": True}, "status": "ok", "reason": ""}]
    row = _apps(DeviceHealth("dev-1", "lab", "healthy", apps=shown))
    assert row == f"color 1.0.0 done {app['fps']:.1f}fps [door]"
    assert password not in json.dumps(answer)
