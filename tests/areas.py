"""pytest plugin: per-area progress, and the `servers` mark behind `make test-fast`.

A full run on a loaded 2-core machine takes minutes; a screen of dots says
nothing about where it is. Each test module announces itself as it starts,
with its place in the run and how long the one before took:

    [12/48] tests/rollout/test_cli.py (previous module 9s)

Tests that start real servers (a lab of sshd's, mosquitto, moto, an RTSP
server, the vision runtime) are marked `servers`, by the fixtures they use or
by what their module starts; `make test-fast` deselects them.
Turn the progress lines off with `-p no:areas`.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

# Fixtures that start a server or a lab, or load a real model: not for the fast loop.
SERVER_FIXTURES = frozenset({
    "any_lab", "lab", "lab12", "lab30", "factory_lab", "mqtt_lab", "ota_lab", "lab_cameras",
    "moto", "moto_endpoint", "moto_s3", "moto_server", "aws", "aws_project", "mqtt_broker",
    "rtsp_server", "digest_rtsp_server", "face_stream", "bundle_server", "daemon_procs",
    "runtime_http", "running", "silent_server", "face_blur_app", "centerface_onnx",
    "still_face_video", "face_video", "factory",
    "amd64_deb", "arm64_deb", "debian_tar", "debian_root",  # download wheels and a Debian root
})
# What a module does by itself that makes it slow, whatever fixtures its tests use.
SERVER_CALLS = ("start_lab(", "lab_project(", '"lab", "up"', 'Step("lab up"', "subprocess",
                "Runner(", "RuntimeProcess", "add_field_device(")


def _module_starts_servers(path: Path, cache: dict[Path, bool]) -> bool:
    if path not in cache:
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        cache[path] = any(call in text for call in SERVER_CALLS)
    return cache[path]


class AreaProgress:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.modules: list[str] = []
        self.current: str | None = None
        self.started = 0.0

    @pytest.hookimpl(tryfirst=True)  # before -m deselects by marks
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        cache: dict[Path, bool] = {}
        for item in items:
            if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())) or \
                    _module_starts_servers(Path(item.path), cache):
                item.add_marker(pytest.mark.servers)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.modules = list(dict.fromkeys(i.nodeid.split("::")[0] for i in session.items))

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        module = nodeid.split("::")[0]
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if module == self.current or reporter is None:
            return
        now = time.monotonic()
        took = f" (previous module {now - self.started:.0f}s)" if self.current else ""
        self.current, self.started = module, now
        place = self.modules.index(module) + 1 if module in self.modules else 0
        reporter.ensure_newline()
        reporter.write_line(f"[{place}/{len(self.modules)}] {module}{took}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "servers: starts real servers or a lab (deselected by make test-fast)"
    )
    config.pluginmanager.register(AreaProgress(config), "edgefleet-area-progress")
