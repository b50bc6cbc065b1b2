"""`fleet-agent` OTA commands: install, activate, boot, commit, rollback, slots, reboot.

Thin: parse, call ``fleet_runtime.slots``, turn its errors into AgentError.
``install`` streams progress lines on stderr (``{"progress": {"step": "write",
"done": N, "total": M}}``) at most every 0.25 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from fleet_runtime import slots
from fleet_runtime.agent.protocol import AgentError, progress
from fleet_runtime.bundle import BundleError
from fleet_runtime.layout import Layout

Handler = Callable[[argparse.Namespace, Layout], dict[str, Any]]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("install", help="verify a bundle and write it into the inactive slot")
    p.add_argument("bundle", help="bundle file, or - for stdin")
    p.add_argument("--remove-after", action="store_true",
                   help="delete the bundle file afterwards, installed or refused "
                   "(only under the upload dir)")
    p.set_defaults(handler=run_install)
    p = sub.add_parser("activate", help="boot the installed slot next, on trial")
    p.add_argument("--trials", type=int, default=slots.DEFAULT_TRIALS)
    p.set_defaults(handler=_guarded(lambda a, lay: slots.activate(lay, a.trials)))
    p = sub.add_parser("boot", help="start-up: choose the slot (trial counter, fallback)")
    p.set_defaults(handler=_guarded(lambda a, lay: slots.boot(lay)))
    p = sub.add_parser("commit", help="make the slot on trial permanent")
    p.add_argument("--force", action="store_true", help="commit even if its self-test failed")
    p.set_defaults(handler=_guarded(lambda a, lay: slots.commit(lay, a.force)))
    p = sub.add_parser("rollback", help="return to the committed slot")
    p.add_argument("--reason", default="rolled back by operator")
    p.set_defaults(handler=_guarded(lambda a, lay: slots.rollback(lay, a.reason)))
    p = sub.add_parser("slots", help="both slots, versions, pending state, trials")
    p.add_argument("--json", action="store_true", help="accepted for symmetry; always JSON")
    p.add_argument("--verify", action="store_true", help="re-hash installed slots")
    p.set_defaults(handler=run_slots)
    p = sub.add_parser("reboot", help="reboot a real device (lab devices: `fleet lab reboot`)")
    p.set_defaults(handler=run_reboot)


def _guarded(fn: Handler) -> Handler:
    def handler(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
        with agent_errors():
            return fn(args, layout)

    return handler


@contextmanager
def agent_errors() -> Iterator[None]:
    try:
        yield
    except (BundleError, slots.SlotError) as exc:
        raise AgentError(exc.code, exc.message) from exc


def _throttled(step: str, every_s: float = 0.25) -> Callable[[int, int], None]:
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s or done == total:
            last[0] = now
            progress(step, done=done, total=total)

    return report


@contextmanager
def _source(name: str) -> Iterator[BinaryIO]:
    if name == "-":
        yield sys.stdin.buffer
        return
    try:
        fh = open(name, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError as exc:
        raise AgentError("not-found", f"no bundle at {name}; upload it first") from exc
    with fh:
        yield fh


def run_install(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    progress("verify", bundle=args.bundle)
    try:
        with agent_errors(), _source(args.bundle) as stream:
            return slots.install(layout, stream, on_progress=_throttled("write"))
    finally:
        if args.remove_after and args.bundle != "-":
            _remove_upload(layout, Path(args.bundle))


def _remove_upload(layout: Layout, path: Path) -> None:
    incoming = slots.incoming_dir(layout).resolve()
    if path.resolve().parent == incoming:
        path.unlink(missing_ok=True)


def run_slots(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    out = slots.summary(layout)
    slots.incoming_dir(layout).mkdir(parents=True, exist_ok=True)
    if args.verify:
        with agent_errors():
            out["verify"] = {s: slots.verify_slot(layout, s) for s in ("a", "b")
                             if (out["slots"].get(s) or {}).get("status") != "failed"}
    return out


def run_reboot(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    if layout.root.resolve() != Path("/"):
        raise AgentError("lab-device", f"FLEET_ROOT is {layout.root}: this is a lab device; "
                         "reboot it with `fleet lab reboot NAME`")
    # Detached so this command can answer before the machine goes down.
    subprocess.Popen(["sh", "-c", "sleep 1; systemctl reboot || /sbin/reboot"],
                     start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return {"rebooting": True, "pid": os.getpid()}
