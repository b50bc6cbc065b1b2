"""`fleet-agent` OTA commands: install, activate, boot, commit, rollback, slots, reboot.

Thin: parse, fire the command's event into the device-side update flow
(``fleet_runtime.flow``, which runs the slot verbs of ``fleet_runtime.slots``),
turn its errors into AgentError. Each command answers what its slot verb
answered, plus ``flow`` (the flow's state afterwards). ``commit`` runs the flow's
gate first (self-test, then health; ``--force`` skips it): a failed gate rolls
the device back and answers the gate's error.
``install`` streams progress lines on stderr (``{"progress": {"step": "write",
"done": N, "total": M}}``) at most every 0.25 s.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from fleet_runtime import durable, flow, labhooks, slots
from fleet_runtime.agent import after_boot, health
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
    p.add_argument("--activate", action="store_true",
                   help="then mark the new slot for the next boot (as `activate`)")
    p.add_argument("--trials", type=int, default=slots.DEFAULT_TRIALS,
                   help="with --activate: boots the new slot gets before falling back")
    p.add_argument("--save", metavar="PATH",
                   help="with -: keep the bytes received in PATH.part while installing, so an "
                   "interrupted transfer can be resumed (SFTP) and installed from the file")
    p.set_defaults(handler=run_install)
    p = sub.add_parser("activate", help="boot the installed slot next, on trial")
    p.add_argument("--trials", type=int, default=slots.DEFAULT_TRIALS)
    p.set_defaults(handler=_guarded(run_activate))
    p = sub.add_parser("boot", help="start-up: choose the slot (trial counter, fallback)")
    p.set_defaults(handler=_guarded(run_boot))
    p = sub.add_parser("commit", help="make the slot on trial permanent (after its self-test "
                       "and health gate)")
    p.add_argument("--force", action="store_true",
                   help="commit even if its self-test or health check failed")
    # The gate's health thresholds: the controller passes the fleet's, as it does to `health`.
    health.add_thresholds(p, with_defaults=False)
    after_boot.register(p)
    p.set_defaults(handler=_guarded(run_commit))
    p = sub.add_parser("rollback", help="return to the committed slot")
    p.add_argument("--reason", default="rolled back by operator")
    p.set_defaults(handler=_guarded(run_rollback))
    p = sub.add_parser("slots", help="both slots, versions, pending state, trials")
    p.add_argument("--json", action="store_true", help="accepted for symmetry; always JSON")
    p.add_argument("--verify", action="store_true", help="re-hash installed slots")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="first wait (up to SECONDS) for a running install to finish")
    p.set_defaults(handler=run_slots)
    p = sub.add_parser("reboot", help="reboot a real device (lab devices: `fleet lab reboot`)")
    p.set_defaults(handler=run_reboot)


def _guarded(fn: Handler) -> Handler:
    """Slot errors as agent errors; one flow command at a time (the install lock)."""
    def handler(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
        with agent_errors(), install_lock(layout, exclusive=True, wait_s=30.0):
            return fn(args, layout)

    return handler


@contextmanager
def agent_errors() -> Iterator[None]:
    try:
        yield
    except (BundleError, slots.SlotError, flow.FlowError) as exc:
        raise AgentError(exc.code, exc.message) from exc


def _say(step: str, **fields: Any) -> bool:
    """A progress line; False once the controller has hung up (the work goes on)."""
    try:
        progress(step, **fields)
        return True
    except OSError:
        return False


def _throttled(step: str, every_s: float = 0.25) -> Callable[[int, int], None]:
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if last[0] >= 0 and (now - last[0] >= every_s or done == total):
            last[0] = now
            if not _say(step, done=done, total=total):
                last[0] = -1.0

    return report


@contextmanager
def install_lock(layout: Layout, exclusive: bool, wait_s: float) -> Iterator[None]:
    """One install at a time; readers may wait for it (`slots --wait`)."""
    layout.run.mkdir(parents=True, exist_ok=True)
    try:
        lock = durable.acquire_lock(layout.run / "install.lock", shared=not exclusive,
                                    timeout=wait_s)
    except durable.LockTimeout:
        raise AgentError("busy", "another install is running on this device; "
                         "wait for it or retry") from None
    try:
        yield
    finally:
        os.close(lock)


class _Prefetch:
    """Reads stdin on a thread (and appends it to the resumable copy) while the install
    hashes and writes: the SSH pipe keeps flowing instead of stalling on every write."""

    def __init__(self, fd: int, out: BinaryIO | None, depth: int = 64) -> None:
        self.fd, self.out = fd, out
        self.chunks: queue.Queue[bytes | BaseException] = queue.Queue(depth)
        self.buffer, self.eof, self.discarding = b"", False, False
        _grow_pipe(fd)
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        try:
            while chunk := os.read(self.fd, 1 << 20):
                if self.discarding:
                    continue
                if self.out is not None:
                    self.out.write(chunk)
                self.chunks.put(chunk)
            if self.out is not None:
                self.out.flush()
            self.chunks.put(b"")
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, raised there
            self.chunks.put(exc)

    def read(self, size: int = -1) -> bytes:
        """Like a raw read: what has arrived, at most `size`, b"" only at the end (no copies)."""
        if size < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        if not self.buffer and not self.eof:
            chunk = self.chunks.get()
            if isinstance(chunk, BaseException):
                raise chunk
            self.eof, self.buffer = not chunk, chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def discard(self, timeout_s: float = 600.0) -> None:
        """After a refusal: swallow the rest of the stream so the sender gets our answer."""
        self.discarding = True
        while self.thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self.chunks.get(timeout=0.05)
            self.thread.join(0.0)
            timeout_s -= 0.05
            if timeout_s <= 0:
                return


def _grow_pipe(fd: int) -> None:
    """A 1 MiB pipe (Linux) between sshd and us: fewer stalls per megabyte."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, 1031, 1 << 20)  # F_SETPIPE_SZ


@contextmanager
def _source(args: argparse.Namespace, layout: Layout) -> Iterator[Any]:
    if args.bundle != "-":
        if args.save:
            raise AgentError("usage", "--save only applies to installs from stdin (-)")
        try:
            fh = open(args.bundle, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError as exc:
            raise AgentError("not-found", f"no bundle at {args.bundle}; upload it first") from exc
        with fh:
            yield fh
        return
    if not args.save:
        yield _Prefetch(sys.stdin.fileno(), None)
        return
    part = Path(args.save + ".part")
    _check_upload_path(layout, part)
    with open(part, "wb") as out:
        yield _Prefetch(sys.stdin.fileno(), out)


def _check_upload_path(layout: Layout, path: Path) -> None:
    if path.resolve().parent != slots.incoming_dir(layout).resolve():
        raise AgentError("usage", f"{path} is not in the upload dir {slots.incoming_dir(layout)}")


def run_install(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    # A controller that hangs up must not kill an install midway: it ends on its own terms
    # (a cut stream is "truncated", its bytes kept for a resume).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _say("verify", bundle=args.bundle)
    waits = flow.PUSH_WAITS | (set() if args.activate else {flow.State.INSTALLED})
    with install_lock(layout, exclusive=True, wait_s=30.0):
        try:
            with agent_errors(), _source(args, layout) as stream:
                ctx = flow.Context(layout, frozenset(waits), source=stream,
                                   on_progress=_throttled("write"), trials=args.trials)
                try:
                    flow.settle(ctx)
                    doc = flow.drive(ctx, flow.Event.INSTALL,
                                     **flow.start_changes("push", trials=args.trials))
                    if ctx.error is not None:
                        raise ctx.error
                except BaseException:
                    if isinstance(stream, _Prefetch):
                        stream.discard()
                    raise
        except (AgentError, OSError) as exc:
            _cleanup(args, layout, keep_partial=getattr(exc, "code", "") == "truncated")
            raise
        _cleanup(args, layout, keep_partial=False)
    result = dict(ctx.answers["install"])
    if args.activate:
        result["activated"] = ctx.answers["activate"]
    return {**result, "flow": doc["state"]}


def _push(layout: Layout, *waits: flow.State, **fields: Any) -> flow.Context:
    """A push command's flow: first finish what a killed command left half done."""
    ctx = flow.Context(layout, flow.PUSH_WAITS | frozenset(waits), **fields)
    flow.settle(ctx)
    return ctx


def _answer(ctx: flow.Context, doc: dict[str, Any], verb: str) -> dict[str, Any]:
    """The slot verb's answer and the flow's state; the flow's failure as the error."""
    if ctx.error is not None:
        raise ctx.error
    failed = flow.failure(doc)
    if failed is not None and verb not in ctx.answers:
        raise failed
    return {**ctx.answers[verb], "flow": doc["state"]}


def run_activate(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    if args.trials < 1:
        raise AgentError("usage", "trials must be at least 1")
    ctx = _push(layout, trials=args.trials)
    return _answer(ctx, flow.drive(ctx, flow.Event.ACTIVATE, trials=args.trials), "activate")


def run_boot(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    """Settle first, so a rollback or commit cut short counts for the slot this boot picks."""
    ctx = _push(layout)
    answer = slots.boot(layout)
    return {**answer, "flow": flow.on_boot(ctx)["state"]}


def run_commit(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    """Through the flow's gate when a slot is on trial; otherwise the slot verb as it is
    (a no-op when committed, a refusal in any other state). With ``--expect-version`` the
    controller's post-reboot check comes first (`after_boot`): refused, nothing changes."""
    doc = flow.settle(flow.Context(layout))
    verified = None
    if args.expect_version is not None:
        verified = after_boot.check(args, layout, health.given_thresholds(args))
    extra = {"verified": verified} if verified else {}
    on_trial = slots.read_state(layout)["state"] == "trial"
    if not on_trial and doc["state"] not in (flow.State.CHECKING, flow.State.COMMITTING):
        return {**slots.commit(layout, args.force), "flow": doc["state"], **extra}
    # Runs the gate and the commit; never reboots (a push device is rebooted by the controller).
    ctx = flow.Context(layout, frozenset({flow.State.REBOOTING, flow.State.RESTORING}),
                       force=args.force, health_flags=health.given_thresholds(args) or None)
    doc = flow.drive(ctx)
    if doc["state"] in (flow.State.RESTORING, flow.State.FAILED):
        outcome = doc.get("outcome") or {}
        raise AgentError(str(outcome.get("code", "failed")),
                         f"{outcome.get('reason')}; rolled back to the committed slot (reboot to "
                         "run it; `commit --force` a new install to keep it anyway)")
    answer = _answer(ctx, doc, "commit") if "commit" in ctx.answers else \
        {**slots.commit(layout, args.force), "flow": doc["state"]}
    return {**answer, "gate": doc.get("gate"), **extra}


def run_rollback(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    ctx = _push(layout)
    doc = flow.read(layout)
    state = flow.State(doc["state"])
    if (state, flow.Event.ROLLBACK) not in flow.TABLE:
        return {**slots.rollback(layout, args.reason), "flow": doc["state"]}
    outcome = {"code": "rollback", "reason": args.reason, "in": state.value}
    return _answer(ctx, flow.drive(ctx, flow.Event.ROLLBACK, outcome=outcome), "rollback")


def _cleanup(args: argparse.Namespace, layout: Layout, keep_partial: bool) -> None:
    """A stream cut short keeps its bytes for a resumed upload; anything else goes."""
    if args.save and not keep_partial:
        Path(args.save + ".part").unlink(missing_ok=True)
    if args.remove_after and args.bundle != "-":
        _remove_upload(layout, Path(args.bundle))


def _remove_upload(layout: Layout, path: Path) -> None:
    if path.resolve().parent == slots.incoming_dir(layout).resolve():
        path.unlink(missing_ok=True)


def run_slots(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    if args.wait:
        with install_lock(layout, exclusive=False, wait_s=args.wait):
            pass
    out = slots.summary(layout)
    out["flow"] = flow.summary(layout)
    slots.incoming_dir(layout).mkdir(parents=True, exist_ok=True)
    if args.verify:
        with agent_errors():
            out["verify"] = {s: slots.verify_slot(layout, s) for s in ("a", "b")
                             if (out["slots"].get(s) or {}).get("status") != "failed"}
    return out


def run_reboot(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    try:
        labhooks.reboot(layout)
    except labhooks.NotOnThisDevice as exc:
        raise AgentError(exc.code, exc.message) from None
    return {"rebooting": True, "pid": os.getpid()}
