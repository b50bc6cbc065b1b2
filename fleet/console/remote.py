"""What the console asks of devices, through the same domain calls the CLI makes:
camera snapshots (`Agent.snapshot` over the pinned SSH), log export (`fleet.logs.export`)
and health sweeps (`fleet.health.sweep` / `fleet.heartbeats.sweep`)."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from nornir.core import Nornir
from nornir.core.task import Result, Task

from fleet.errors import DeviceError, FleetError
from fleet.health import DeviceHealth
from fleet.project import Project

SNAPSHOT_FRESH_S = 2.0  # one SSH call per camera at most this often, however many viewers


def _one(project: Project, device: str) -> Nornir:
    from fleet import inventory as inv

    return inv.select(project, inv.Selection.of(limit=device, limit_given_as="device"),
                      num_workers=1)


def _snapshot_task(task: Task, camera: str) -> Result:
    from fleet.agent import agent_for

    return Result(host=task.host, result=agent_for(task).snapshot(camera))


class Snapshots:
    """Recent JPEGs by (device, camera), fetched on demand and kept a moment."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[float, bytes]] = {}

    def get(self, device: str, camera: str) -> bytes:
        key = (device, camera)
        with self._lock:
            kept = self._cache.get(key)
        if kept and time.monotonic() - kept[0] < SNAPSHOT_FRESH_S:
            return kept[1]
        jpeg = self._fetch(device, camera)
        with self._lock:
            self._cache[key] = (time.monotonic(), jpeg)
        return jpeg

    def _fetch(self, device: str, camera: str) -> bytes:
        nr = _one(self.project, device)
        try:
            multi = nr.run(task=_snapshot_task, camera=camera, on_failed=True)[device]
        finally:
            nr.close_connections(on_failed=True)
        if multi[0].failed:
            exc = multi[0].exception
            text = exc.line() if isinstance(exc, FleetError) else f"{type(exc).__name__}: {exc}"
            raise DeviceError(f"{device}: no snapshot of {camera}: {text}")
        return bytes(multi[0].result)


def export_logs(project: Project, device: str, out: Path) -> Path:
    """The device's log bundle, as `fleet logs export --limit DEVICE` makes it."""
    from fleet import logs

    bundles = logs.export(_one(project, device), logs.ExportOptions(out=out))
    bundle = bundles[0]
    if not bundle.ok or bundle.path is None:
        raise DeviceError(f"{device}: log export failed: {bundle.error}")
    return Path(bundle.path)


def sweep(project: Project, source: str) -> list[DeviceHealth]:
    """One health round over the default inventory, from SSH or from MQTT heartbeats."""
    from fleet import health, heartbeats
    from fleet import inventory as inv

    nr = inv.load(project, None)
    if source == "mqtt":
        hosts = [(n, str(h.get("site", "?"))) for n, h in nr.inventory.hosts.items()]
        return heartbeats.sweep(project, hosts)
    return health.sweep(project, nr)


# "scheme://user:password@" anywhere in a text: error text is partly the device's own words,
# and a camera's URL with its credentials must not reach a browser by that road either
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@]+@")


def describe_error(exc: BaseException) -> str:
    """One line for a page or a JSON error, without any user:password@ of a URL in it."""
    return scrub_urls(exc.line() if isinstance(exc, FleetError) else f"{type(exc).__name__}: {exc}")


def scrub_urls(text: str) -> str:
    """`text` without the user:password@ of any URL in it."""
    return _USERINFO.sub(r"\1", text)
