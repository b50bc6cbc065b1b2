"""The runtime supervised per application: ``fleet-agent app run APP``.

One supervisor per app runs ``fleet-runtime run <current version> --http PORT``,
restarts it with growing waits (``durable.Backoff``) when it exits, restarts it
at once when ``current`` is switched, and finishes a deploy flow a killed
command left (the health gate included), so a device decides on its own even
when the controller is gone. It records itself in ``run/fleet/apps/<app>.json``
(its pid, the runtime's pid, version, port, exits since this version started):
the gate reads that record.

On a real device the supervisor is the process of the systemd unit
``fleet-runtime@<app>.service`` (``ExecStart=fleet-agent app run %i``,
``Restart=always``); in the lab the lab starts it. Either way it is the only
thing that starts an app's runtime.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from fleet_runtime.apps import settings
from fleet_runtime.apps.versions import AppDirs
from fleet_runtime.durable import Backoff, LockTimeout, acquire_lock, atomic_write_json
from fleet_runtime.layout import Layout, StateFileError, read_json

POLL_S = 0.2
STABLE_S = 60.0  # a runtime up this long is healthy again: the next exit waits `first` anew
STOP_WAIT_S = 10.0
ACTIVE_FLOW = frozenset({"staging", "activating", "checking", "committing", "rolling-back"})
RUNTIME_MAIN = "import sys; from fleet_runtime.runtime_cli import main; sys.exit(main())"
# A release binding that is only camera names: the names come from the controller's registry,
# override.json binds the node to them and etc/fleet/cameras.json holds their streams.
_CAMERA_NAMES = re.compile(r"[A-Za-z0-9_-]+(,[A-Za-z0-9_-]+)*")


class AlreadySupervised(Exception):
    pass


def record_path(layout: Layout, app: str) -> Path:
    return layout.run / "apps" / f"{app}.json"


def log_path(layout: Layout, app: str) -> Path:
    return layout.logs / "apps" / f"{app}.log"


def read_record(layout: Layout, app: str) -> dict[str, Any] | None:
    try:
        doc = read_json(record_path(layout, app), default=None)
    except StateFileError:
        return None
    return doc if isinstance(doc, dict) else None


def alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")
    except OSError:
        return False


class Supervisor:
    def __init__(self, layout: Layout, app: str, stop: threading.Event) -> None:
        self.layout, self.app, self.stop = layout, app, stop
        self.dirs = AppDirs(layout, app)
        cfg = settings.load(layout)
        self.backoff = Backoff(stop, first=float(cfg["restart_first_s"]),
                               cap=float(cfg["restart_cap_s"]))
        self.child: subprocess.Popen[bytes] | None = None
        self.record: dict[str, Any] = {"pid": os.getpid(), "app": app, "child": None,
                                       "version": None, "port": None, "exits": 0,
                                       "last_exit": None, "restarts": 0}
        self.restart_at = 0.0
        self.started = 0.0
        self.flow_thread: threading.Thread | None = None

    def run(self) -> dict[str, Any]:
        """Supervise until `stop` is set (SIGTERM); the last record."""
        lock = self._lock()
        try:
            self._reap_orphan()
            while not self.stop.is_set():
                self._tick()
                self.stop.wait(POLL_S)
        finally:
            self._stop_child()
            record_path(self.layout, self.app).unlink(missing_ok=True)
            os.close(lock)
        return self.record

    def _lock(self) -> int:
        record_path(self.layout, self.app).parent.mkdir(parents=True, exist_ok=True)
        try:
            return acquire_lock(record_path(self.layout, self.app).with_suffix(".lock"),
                                timeout=0)
        except LockTimeout:
            raise AlreadySupervised(f"{self.app} is already supervised (pid "
                                    f"{(read_record(self.layout, self.app) or {}).get('pid')})"
                                    ) from None

    def _reap_orphan(self) -> None:
        """A runtime a killed supervisor left: stop it, this one starts its own."""
        old = (read_record(self.layout, self.app) or {}).get("child")
        if isinstance(old, int) and alive(old) and b"fleet_runtime.runtime_cli" in _cmdline(old):
            _terminate_pid(old)

    def _tick(self) -> None:
        version = self.dirs.current_version()
        if self.child is not None and version != self.record["version"]:
            self._stop_child()  # switched: the new version starts now, with a fresh count
        if self.child is not None and self.child.poll() is not None:
            self._exited(self.child.returncode)
        if self.child is None and version is not None and time.monotonic() >= self.restart_at:
            self._start(version)
        if self.child is not None and time.monotonic() - self.started > STABLE_S:
            self.backoff.reset()
        self._finish_flow()

    def _start(self, version: str) -> None:
        if version != self.record["version"]:
            self.record.update(version=version, exits=0, last_exit=None)
            self.backoff.reset()
        port = _free_port()
        log = log_path(self.layout, self.app)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.child = subprocess.Popen(  # noqa: S603 - our own interpreter, no shell
                _command(self.dirs, version, port), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        self.started = time.monotonic()
        self.record.update(child=self.child.pid, port=port, started_at=time.time())
        self._save()

    def _exited(self, code: int) -> None:
        self.child = None
        delay = self.backoff.next_delay()
        self.restart_at = time.monotonic() + delay
        self.record.update(child=None, exits=int(self.record["exits"]) + 1,
                           restarts=int(self.record["restarts"]) + 1,
                           last_exit=f"exit code {code}", next_start_in_s=round(delay, 2))
        self._save()

    def _stop_child(self) -> None:
        if self.child is None:
            return
        _terminate(self.child)
        self.child = None
        self.record.update(child=None, port=None)
        self.restart_at = 0.0
        self._save()

    def _save(self) -> None:
        atomic_write_json(record_path(self.layout, self.app), self.record)

    def _finish_flow(self) -> None:
        """Run the gate (or finish a killed step) when no command is driving the flow."""
        if self.flow_thread is not None and self.flow_thread.is_alive():
            return
        from fleet_runtime.apps import flow

        try:
            state = flow.read(self.layout, self.app)["state"]
        except (OSError, StateFileError):
            return
        if state in ACTIVE_FLOW:
            self.flow_thread = threading.Thread(target=self._drive, daemon=True)
            self.flow_thread.start()

    def _drive(self) -> None:
        from fleet_runtime.apps import flow

        try:
            fd = acquire_lock(self.dirs.lock, timeout=0)
        except LockTimeout:
            self.stop.wait(1.0)  # a command is driving it
            return
        try:
            flow.drive(flow.Context(self.layout, self.app))
        except Exception as exc:  # noqa: BLE001 - logged; the next tick tries again
            _note(self.layout, self.app, f"flow: {type(exc).__name__}: {exc}")
            self.stop.wait(5.0)
        finally:
            os.close(fd)


def _command(dirs: AppDirs, version: str, port: int) -> list[str]:
    folder = dirs.version(version)
    cmd = [sys.executable, "-c", RUNTIME_MAIN, "run", str(folder), "--http", str(port)]
    release = dirs.release(version)
    for node, uri in sorted((release.cameras if release else {}).items()):
        if not _CAMERA_NAMES.fullmatch(uri):  # a stream given directly (URL, file, synthetic)
            cmd += ["--camera", f"{node}={uri}"]
    if (folder / "override.json").is_file():
        cmd += ["--override", str(folder / "override.json")]
    return cmd


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _terminate(child: subprocess.Popen[bytes]) -> None:
    child.terminate()
    try:
        child.wait(STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _terminate_pid(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_S
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _note(layout: Layout, app: str, text: str) -> None:
    try:
        with log_path(layout, app).open("a") as fh:
            fh.write(f"fleet-agent app run: {text}\n")
    except OSError:
        pass


def stop_supervisor(layout: Layout, app: str) -> bool:
    """SIGTERM the app's supervisor and wait for it to go; False when none ran."""
    pid = (read_record(layout, app) or {}).get("pid")
    if not isinstance(pid, int) or not alive(pid) or b"fleet" not in _cmdline(pid):
        return False
    _terminate_pid(pid)
    return True


