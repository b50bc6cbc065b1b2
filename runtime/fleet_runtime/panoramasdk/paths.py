"""The appliance's paths for application code: ``/panorama`` and ``/opt/aws/panorama/...``.

On a Panorama appliance a code node finds its code package at ``/panorama``,
writes its logs to ``/opt/aws/panorama/logs`` and keeps files in
``/opt/aws/panorama/storage``. Applications open these by absolute path, often
at import time. On an edgefleet device the unit that starts the runtime binds
the real directories there (systemd ``BindReadOnlyPaths=``/``BindPaths=``, see
docs/panorama.md); :func:`device_paths` notices that and leaves paths alone.

Where nothing is bound (a developer's machine, tests, a runtime without the
privilege to mount), the runtime falls back to remapping those prefixes inside
its own process: ``open``, ``io.open``, the ``os`` and ``os.path`` calls,
``pathlib``, ``logging``'s file handlers, ``onnxruntime.InferenceSession`` and
``cv2.imread``/``imwrite`` see ``/panorama/x`` as ``<code dir>/x``. Any other
path under ``/opt/aws/panorama`` is refused, so an application never writes
into the host's real ``/opt`` by accident. This is a compatibility layer, not
a sandbox: code can still reach any path it names otherwise.

>>> table = PathTable({"/panorama": "/apps/a/src"})
>>> table.map("/panorama/onnx_model/model.onnx")
'/apps/a/src/onnx_model/model.onnx'
>>> table.map("/etc/hosts")
'/etc/hosts'
"""

from __future__ import annotations

import builtins
import functools
import io
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

PANORAMA = "/panorama"
LOGS = "/opt/aws/panorama/logs"
STORAGE = "/opt/aws/panorama/storage"
APPLIANCE = "/opt/aws/panorama"


class PathTable:
    """Appliance prefix -> directory on this machine (longest prefix wins)."""

    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = sorted(mapping.items(), key=lambda item: len(item[0]), reverse=True)

    def map(self, path: Any) -> Any:
        """``path`` as seen on this machine; anything not under a mapped prefix unchanged."""
        if isinstance(path, int) or not isinstance(path, str | bytes | os.PathLike):
            return path  # file descriptors and anything the call itself will reject
        text = os.fsdecode(os.fspath(path))
        if not text.startswith("/"):
            return path
        for prefix, target in self.mapping:
            if text == prefix or text.startswith(prefix + "/"):
                mapped = target + text[len(prefix) :]
                return os.fsencode(mapped) if isinstance(path, bytes) else mapped
        if text == APPLIANCE or text.startswith(APPLIANCE + "/"):
            raise PermissionError(
                f"{text}: edgefleet provides only {PANORAMA}, {LOGS} and {STORAGE} of the"
                " appliance's paths"
            )
        return path


_local = threading.local()
_default: list[PathTable] = []
_installed: list[bool] = []
_real_stat = os.stat  # before install() wraps it


def bind(table: PathTable | None) -> None:
    """Use ``table`` on this thread (and as the default for threads the application starts)."""
    _local.table = table
    _default[:] = [table] if table is not None else []


def _table() -> PathTable | None:
    return getattr(_local, "table", None) or (_default[0] if _default else None)


def remap(path: Any) -> Any:
    """``path`` through the current thread's table (unchanged when none is bound)."""
    table = _table()
    return path if table is None else table.map(path)


def device_paths(code_root: Path, logs_dir: Path, storage_dir: Path) -> PathTable:
    """The table for one code node; prefixes already bound to the right place are left out."""
    wanted = {PANORAMA: code_root, LOGS: logs_dir, STORAGE: storage_dir}
    mapping = {}
    for prefix, target in wanted.items():
        if not _bound(prefix, target):
            target.mkdir(parents=True, exist_ok=True)
            mapping[prefix] = str(target.resolve())
    return PathTable(mapping)


def _bound(prefix: str, target: Path) -> bool:
    """Whether ``prefix`` already is ``target`` (a bind mount made by the device's unit)."""
    try:
        here, there = _real_stat(prefix), _real_stat(target)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


# ---- the in-process remapping layer ---------------------------------------------------

_ONE_PATH = ["open", "stat", "lstat", "listdir", "scandir", "mkdir", "makedirs", "remove", "unlink", "rmdir", "access", "chmod", "utime", "readlink", "truncate", "mkfifo", "mknod", "chdir", "chown", "lchown", "statvfs", "pathconf", "listxattr", "getxattr", "setxattr", "removexattr"]
_TWO_PATHS = ("rename", "replace", "link", "symlink")


def _first(call: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(call)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if args:
            return call(remap(args[0]), *args[1:], **kwargs)
        for key in ("file", "path", "filename"):  # open(file=...), os.stat(path=...)
            if key in kwargs:
                kwargs[key] = remap(kwargs[key])
        return call(*args, **kwargs)

    return wrapper


def _both(call: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(call)
    def wrapper(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
        return call(remap(src), remap(dst), *args, **kwargs)

    return wrapper


def install() -> None:
    """Route the process's file calls through :func:`remap` (once; a no-op without a table)."""
    if _installed:
        return
    _installed.append(True)
    opener = _first(io.open)
    builtins.open = io.open = opener
    logging.FileHandler._builtin_open = opener  # type: ignore[attr-defined]
    for names, wrap in ((_ONE_PATH, _first), (_TWO_PATHS, _both)):
        for name in names:
            if hasattr(os, name):
                _replace_os(name, wrap(getattr(os, name)))
    _patch_old_pathlib(opener)
    _patch_native_loaders()
    _patch_basic_config()


def _replace_os(name: str, wrapper: Callable[..., Any]) -> None:
    """Swap an os function, keeping its place in os.supports_* (shutil and pathlib ask)."""
    original = getattr(os, name)
    for group in (os.supports_dir_fd, os.supports_fd, os.supports_follow_symlinks):
        if original in group:
            group.add(wrapper)
    setattr(os, name, wrapper)


def _patch_old_pathlib(opener: Callable[..., Any]) -> None:
    """Python 3.10's pathlib copied os functions into an accessor at import time."""
    import pathlib

    accessor = getattr(pathlib, "_NormalAccessor", None)
    if accessor is None:
        return
    for name in (*_ONE_PATH, *_TWO_PATHS):
        if hasattr(accessor, name) and hasattr(os, name):
            setattr(accessor, name, staticmethod(getattr(os, name)))
    accessor.open = staticmethod(opener)


def _patch_native_loaders() -> None:
    """Libraries that open files in C never see ``open``: remap their path arguments."""
    try:
        import onnxruntime as ort  # type: ignore[import-untyped]
    except ImportError:
        ort = None
    if ort is not None:
        base = ort.InferenceSession

        class InferenceSession(base):  # type: ignore[misc,valid-type]
            def __init__(self, path_or_bytes: Any, *args: Any, **kwargs: Any) -> None:
                super().__init__(remap(path_or_bytes), *args, **kwargs)

        InferenceSession.__qualname__ = base.__qualname__
        ort.InferenceSession = InferenceSession
    try:
        import cv2  # type: ignore[import-untyped]
    except ImportError:
        return
    for name in ("imread", "imwrite", "imreadmulti"):
        if hasattr(cv2, name):
            setattr(cv2, name, _first(getattr(cv2, name)))


def app_dirs(app: str) -> tuple[Path, Path]:
    """Where an application's appliance logs and storage live on this machine.

    On a device (FLEET_ROOT holds etc/fleet/device.json): ``var/log/fleet/apps/<app>/``,
    which ``fleet-agent logs export`` collects, and ``var/lib/fleet/app-storage/<app>/``.
    Anywhere else (a developer's machine, CI): ``~/.local/state/fleet-runtime/<app>/``
    (``$XDG_STATE_HOME`` if set), so a trial run never writes into the host's /var or /opt.
    """
    from fleet_runtime.layout import Layout

    layout = Layout.from_env()
    if layout.device_json.exists():
        return layout.logs / "apps" / app, layout.state / "app-storage" / app
    home = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local/state")
    return home / "fleet-runtime" / app / "logs", home / "fleet-runtime" / app / "storage"


@functools.cache
def for_node(code_root: Path, app: str) -> PathTable:
    """The path table of a code node of ``app`` whose code package is ``code_root``."""
    logs, storage = app_dirs(app)
    table = device_paths(code_root, logs, storage)
    for prefix, target in table.mapping:
        logging.getLogger("fleet_runtime.paths").info("%s: %s is %s", app, prefix, target)
    return table


def _patch_basic_config() -> None:
    """Let an application's ``logging.basicConfig(filename=...)`` take effect.

    On the appliance each application is its own process, so its first
    ``basicConfig`` configures the root logger. Here the runtime configured the
    root logger first, and the app's call would silently do nothing: its log file
    would never appear. Add the app's handlers beside the runtime's own instead
    (once per file, however often the node restarts), and keep the runtime's
    records out of them.
    """
    original = logging.basicConfig

    def basic_config(**kwargs: Any) -> None:
        root = logging.getLogger()
        if not root.handlers or kwargs.get("force"):
            original(**kwargs)
            return
        saved, root.handlers = root.handlers[:], []
        try:
            original(**kwargs)
        finally:
            added, root.handlers = root.handlers, saved
        for handler in added:
            if not any(_same_file(handler, h) for h in saved):
                handler.addFilter(_not_runtime)
                root.addHandler(handler)
            else:
                handler.close()

    logging.basicConfig = basic_config


def _same_file(one: logging.Handler, other: logging.Handler) -> bool:
    name = getattr(one, "baseFilename", None)
    return name is not None and name == getattr(other, "baseFilename", None)


def _not_runtime(record: logging.LogRecord) -> bool:
    return not record.name.startswith(("fleet_runtime", "fleet."))
