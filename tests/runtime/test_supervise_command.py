"""The runtime command the device's supervisor starts: a release's camera binding that is a
stream goes on the command line; one that only names registry cameras does not (those
names are bound by the version's override.json, their streams are in cameras.json)."""

from __future__ import annotations

import json

from fleet_runtime.apps.supervise import _command
from fleet_runtime.apps.versions import RELEASE_FILE, AppDirs
from fleet_runtime.layout import Layout


def command_for(tmp_path, cameras: dict[str, str]) -> list[str]:
    dirs = AppDirs(Layout(tmp_path), "face_blur")
    folder = dirs.version("1.0.0")
    folder.mkdir(parents=True)
    (folder / RELEASE_FILE).write_text(json.dumps(
        {"name": "face_blur", "version": "1.0.0", "files": [], "cameras": cameras}))
    return _command(dirs, "1.0.0", 8080)


def test_a_stream_binding_is_passed_to_the_runtime(tmp_path):
    cmd = command_for(tmp_path, {"camera_node": "rtsp://10.0.0.7/stream"})
    assert cmd[-2:] == ["--camera", "camera_node=rtsp://10.0.0.7/stream"]


def test_registry_camera_names_are_left_to_override_and_cameras_json(tmp_path):
    cmd = command_for(tmp_path, {"camera_node": "berlin-01-cam1,berlin-01-cam2"})
    assert "--camera" not in cmd
