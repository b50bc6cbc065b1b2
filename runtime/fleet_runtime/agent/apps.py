"""`fleet-agent blobs ...` and `fleet-agent app ...`: applications on the device.

::

    fleet-agent blobs have SHA...                    which blobs are here (and partial sizes)
    fleet-agent blobs put SHA --size N [--offset K] [--from FILE]   (data on stdin by default)
    fleet-agent blobs gc [--grace S]                 remove blobs no version needs
    fleet-agent app stage MANIFEST|-                 build the version from blobs, side by side
    fleet-agent app activate APP [--no-wait] [--window S]   switch, then hold the health gate
    fleet-agent app commit APP [--force]             run the gate now (or skip it)
    fleet-agent app rollback APP [--reason TEXT]     back to the committed (or previous) version
    fleet-agent app list                             every app: state, versions, reason
    fleet-agent app remove APP                       stop it, delete its versions
    fleet-agent app start APP                        start its supervisor (detached) unless it runs
    fleet-agent app run APP                          supervise its runtime (foreground)

See docs/device-apps.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fleet_runtime import durable
from fleet_runtime.agent.protocol import EXIT_USAGE, AgentError
from fleet_runtime.apps import flow, settings, supervise, versions
from fleet_runtime.apps.blobs import BlobError, BlobStore, check_sha
from fleet_runtime.apps.flow import AppFlowError, Event
from fleet_runtime.apps.release import NAME_RE, ReleaseError, parse
from fleet_runtime.durable import LockTimeout, file_lock
from fleet_runtime.layout import Layout

LOCK_WAIT_S = 60.0
# States a deploy reaches after its stage and activate: a retried stage or activate of the
# same version answers where it stands instead of starting over.
PAST_STAGE = frozenset({"activating", "checking", "committing", "done"})


def _app_name(text: str) -> str:
    if not NAME_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an application name")
    return text


def _sha(text: str) -> str:
    try:
        return check_sha(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(text)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    blobs = sub.add_parser("blobs", help="the content-addressed blob store").add_subparsers(
        dest="verb", required=True, parser_class=sub._parser_class)
    p = blobs.add_parser("have", help="which of these blobs are here")
    p.add_argument("sha", nargs="+", type=_sha)
    p.set_defaults(handler=cmd_have)
    p = blobs.add_parser("put", help="receive one blob (stdin, or a file uploaded beside it)")
    p.add_argument("sha", type=_sha)
    p.add_argument("--size", type=_count, required=True)
    p.add_argument("--offset", type=_count, default=0, help="continue a partial blob")
    p.add_argument("--from", dest="source", type=Path, help="read this file (then remove it)")
    p.set_defaults(handler=cmd_put)
    p = blobs.add_parser("gc", help="remove blobs no kept version needs")
    p.add_argument("--grace", type=_seconds, help="spare blobs younger than S seconds")
    p.set_defaults(handler=cmd_gc)
    _app_commands(sub.add_parser("app", help="deploy and run applications").add_subparsers(
        dest="verb", required=True, parser_class=sub._parser_class))


def _app_commands(app: Any) -> None:
    p = app.add_parser("stage", help="build a version from blobs (manifest file, or - for stdin)")
    p.add_argument("manifest")
    p.set_defaults(handler=cmd_stage)
    p = app.add_parser("activate", help="switch to the staged version and hold the health gate")
    p.add_argument("app", type=_app_name)
    p.add_argument("version", nargs="?", help="the staged version expected (makes a retry safe)")
    p.add_argument("--no-wait", action="store_true", help="switch only; the supervisor gates")
    p.add_argument("--window", type=_seconds, help="health window in seconds")
    p.set_defaults(handler=cmd_activate)
    p = app.add_parser("commit", help="run the health gate now, commit or roll back")
    p.add_argument("app", type=_app_name)
    p.add_argument("--force", action="store_true", help="commit without the gate")
    p.add_argument("--window", type=_seconds, help="health window in seconds")
    p.set_defaults(handler=cmd_commit)
    p = app.add_parser("rollback", help="back to the committed (or the previous) version")
    p.add_argument("app", type=_app_name)
    p.add_argument("--reason", default="rolled back by operator")
    p.set_defaults(handler=cmd_rollback)
    p = app.add_parser("list", help="every application: state, versions, reason")
    p.set_defaults(handler=cmd_list)
    p = app.add_parser("remove", help="stop an application and delete its versions")
    p.add_argument("app", type=_app_name)
    p.set_defaults(handler=cmd_remove)
    p = app.add_parser("start", help="start the application's supervisor unless it runs")
    p.add_argument("app", type=_app_name)
    p.set_defaults(handler=cmd_start)
    p = app.add_parser("run", help="supervise the application's runtime (foreground)")
    p.add_argument("app", type=_app_name)
    p.set_defaults(handler=cmd_run)


# --------------------------------------------------------------------------- blobs


def _store(layout: Layout) -> BlobStore:
    return BlobStore(layout, int(_settings(layout)["reserve_bytes"]))


def _settings(layout: Layout) -> dict[str, Any]:
    try:
        return settings.load(layout)
    except settings.SettingsError as exc:
        raise AgentError("bad-settings", str(exc)) from None


@contextmanager
def _blob_errors() -> Any:
    try:
        yield
    except BlobError as exc:
        raise AgentError(exc.code, exc.message) from None


def cmd_have(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    return _store(layout).have(args.sha)


def cmd_put(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    with _blob_errors():
        if args.source is None:
            return _store(layout).receive(sys.stdin.buffer, args.sha, args.size, args.offset)
        with args.source.open("rb") as fh:
            answer = _store(layout).receive(fh, args.sha, args.size, args.offset)
        args.source.unlink(missing_ok=True)
        return answer


def cmd_gc(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    grace = args.grace if args.grace is not None else float(_settings(layout)["gc_grace_s"])
    return _store(layout).gc(versions.referenced(layout), grace)


# --------------------------------------------------------------------------- app


@contextmanager
def _flow(layout: Layout, name: str) -> Any:
    """The app's lock, and flow errors as agent errors."""
    dirs = versions.AppDirs(layout, name)
    dirs.root.mkdir(parents=True, exist_ok=True)
    try:
        with file_lock(dirs.lock, timeout=LOCK_WAIT_S):
            yield
    except LockTimeout:
        raise AgentError("busy", f"another command (or the supervisor's health gate) is "
                         f"driving {name}; try again when it ends") from None
    except AppFlowError as exc:
        raise AgentError(exc.code, exc.message) from None
    except (ReleaseError, settings.SettingsError) as exc:
        raise AgentError("bad-release", str(exc)) from None


def _answer(layout: Layout, name: str, doc: dict[str, Any]) -> dict[str, Any]:
    status = flow.status(layout, name)
    if doc["state"] in ("failed", "rolled-back") and doc.get("outcome"):
        outcome = doc["outcome"]
        code = "rolled-back" if outcome.get("rolled_back") else str(outcome.get("code"))
        if outcome.get("code") != "rollback":  # an operator's own rollback is a success
            raise AgentError(code, f"{name}: {outcome.get('reason')}")
    return {"app": status}


def _read_manifest(text: str) -> Any:
    try:
        raw = sys.stdin.read() if text == "-" else Path(text).read_text()
        return parse(json.loads(raw), "stdin" if text == "-" else text)
    except OSError as exc:
        raise AgentError("usage", f"cannot read the manifest {text}: {exc.strerror}",
                         EXIT_USAGE) from None
    except ValueError as exc:
        raise AgentError("usage", f"{text}: {exc}", EXIT_USAGE) from None


def cmd_stage(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    release = _read_manifest(args.manifest)
    store = _store(layout)
    missing = versions.missing_blobs(store, release)
    if missing:  # refused before anything is written: the answer names what to send
        raise AgentError("missing-blobs", f"{len(missing)} blob(s) of {release.name} "
                         f"{release.version} are not here (first {missing[0][:12]}); send "
                         "them with `fleet-agent blobs put`, then stage again")
    with _flow(layout, release.name):
        ctx = flow.Context(layout, release.name)
        doc = flow.settle(ctx)
        if doc.get("target") == release.version and doc["state"] in PAST_STAGE:
            return _answer(layout, release.name, doc)  # a retry: it went further already
        doc = flow.drive(ctx, Event.STAGE, target=release.version, release=release.as_dict(),
                         outcome=None, gate=None)
        return _answer(layout, release.name, doc)


def _health_flags(args: argparse.Namespace) -> dict[str, Any]:
    return {"window_s": args.window} if getattr(args, "window", None) is not None else {}


def cmd_activate(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    _known(layout, args.app)
    with _flow(layout, args.app):
        stop = frozenset({flow.State.CHECKING}) if args.no_wait else frozenset()
        ctx = flow.Context(layout, args.app, stop, health=_health_flags(args))
        doc = flow.settle(ctx)
        if args.version is not None and doc.get("target") != args.version:
            raise AgentError("wrong-version", f"{args.app}: {doc.get('target')} is staged, "
                             f"not {args.version}; stage {args.version} first")
        if args.version is not None and doc["state"] in PAST_STAGE:
            return _answer(layout, args.app, flow.drive(ctx))  # a retry: carry on from there
        return _answer(layout, args.app, flow.drive(ctx, Event.ACTIVATE))


def cmd_commit(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    _known(layout, args.app)
    with _flow(layout, args.app):
        ctx = flow.Context(layout, args.app, force=args.force, health=_health_flags(args))
        flow.settle(ctx)
        doc = flow.drive(ctx)
        if doc["state"] not in ("done", "failed", "rolled-back"):
            raise AgentError("wrong-state", f"nothing to commit: {flow.hint(doc)}")
        return _answer(layout, args.app, doc)


def cmd_rollback(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    _known(layout, args.app)
    with _flow(layout, args.app):
        ctx = flow.Context(layout, args.app)
        doc = flow.settle(ctx)
        changes = flow.rollback_changes(doc, str(args.reason)[:300])
        if doc["state"] == "done" and changes["fallback"] is None:
            raise AgentError("no-previous", f"{args.app} {doc.get('committed')} is the only "
                             "version kept; there is nothing to roll back to")
        return _answer(layout, args.app, flow.drive(ctx, Event.ROLLBACK, **changes))


def cmd_list(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    apps = []
    for name in layout.app_names():
        status = flow.status(layout, name)
        record = supervise.read_record(layout, name) or {}
        status["supervisor"] = {"running": supervise.alive(record.get("pid")),
                                "runtime_pid": record.get("child"),
                                "version": record.get("version"),
                                "exits": record.get("exits"), "last_exit": record.get("last_exit")}
        apps.append(status)
    return {"apps": apps}


def cmd_remove(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    dirs = _known(layout, args.app)
    stopped = supervise.stop_supervisor(layout, args.app)
    with _flow(layout, args.app):
        trash = layout.apps / f".removed-{args.app}"
        shutil.rmtree(trash, ignore_errors=True)
        durable.replace(dirs.root, trash)  # one rename: the app is there whole, or gone
        shutil.rmtree(trash, ignore_errors=True)
    supervise.record_path(layout, args.app).unlink(missing_ok=True)
    return {"removed": args.app, "supervisor_stopped": stopped}


def _known(layout: Layout, name: str) -> versions.AppDirs:
    dirs = versions.AppDirs(layout, name)
    if not (dirs.root / "app.json").is_file():
        known = ", ".join(layout.app_names()) or "none"
        raise AgentError("not-found", f"no application {name} on this device (known: {known})")
    return dirs


def cmd_start(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    """The lab's stand-in for ``systemctl start fleet-runtime@APP``: `app run` detached
    (own session, no inherited descriptors), so the SSH command that asked returns."""
    _known(layout, args.app)
    record = supervise.read_record(layout, args.app) or {}
    if supervise.alive(record.get("pid")):
        return {"app": args.app, "supervisor": record.get("pid"), "started": False}
    env = {**os.environ, "FLEET_ROOT": str(layout.root)}
    proc = subprocess.Popen([sys.executable, "-m", "fleet_runtime.agent.cli", "app", "run",
                             args.app], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)
    return {"app": args.app, "supervisor": proc.pid, "started": True}


def cmd_run(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    _known(layout, args.app)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        record = supervise.Supervisor(layout, args.app, stop).run()
    except supervise.AlreadySupervised as exc:
        raise AgentError("busy", str(exc)) from None
    return {"app": args.app, "restarts": record.get("restarts"), "stopped": True}
