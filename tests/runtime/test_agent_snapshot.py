"""`fleet-agent snapshot`: a camera nobody streams is one clear failure, not a traceback.
(The JPEG itself, from a real runtime over a lab device's SSH, is checked by
tests/console/test_console_browser.py.)"""

from __future__ import annotations

import socket
from pathlib import Path

from fleet_runtime.layout import Layout, atomic_write_json
from test_agent_protocol import call, device  # noqa: F401 - the fixture


def test_no_running_application_says_so(device: Path) -> None:  # noqa: F811
    code, out = call(device, "snapshot", "--camera", "door")
    assert code == 1 and not out["ok"]
    assert out["error"] == {"code": "no-camera", "message": "camera door is not streaming in "
                            "any running application (streaming: none)"}


def test_an_application_that_does_not_answer_has_no_frame(device: Path) -> None:  # noqa: F811
    with socket.socket() as s:  # a port with nothing listening on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    atomic_write_json(Layout(device).run / "runtime.json", {"apps": {"lobby": {"http_port": port}}})
    code, out = call(device, "snapshot", "--camera", "door")
    assert code == 1 and out["error"]["code"] == "no-camera"


def test_the_camera_is_required(device: Path) -> None:  # noqa: F811
    code, out = call(device, "snapshot")
    assert code == 2 and out["error"]["code"] == "usage"
