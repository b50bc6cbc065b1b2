"""A/B slots: the device's update state machine, persisted in ``boot.json``.

The whole flow is one table, ``TRANSITIONS``: ``(state, event) -> next state``.
The verbs (``install``, ``activate``, ``boot``, ``commit``, ``rollback``) work out
which event happened and call ``_transition``, which refuses anything not in
the table and writes the new state atomically (temp, fsync, rename, fsync
dir) *before* the verb acts on it, so a power cut at any instant leaves a
state that the next ``boot`` resolves to a valid slot:

::

    idle --install--> installing --written--> installed --activate--> activated
      ^                   |  (install-failed, discard: back to idle)       |
      |                   v                                                | boot-trial
      +------------------ idle <--commit / rollback / fallback-- trial <---+

``trial`` is the new slot running with ``trials_left`` boots to go; a boot in
``trial`` with no trials left is a ``fallback`` to the committed slot.

Where the slots live and who picks the slot at boot is the device's backend
(``fleet_runtime.slot_backends``: directories with a ``current`` link, or Jetson
rootfs A/B through ``nvbootctrl``, whose bootloader then counts the trials).

Contract used by `info`/`health` and the lab (signatures kept):
``active_slot(layout) -> str``, ``software_version(layout) -> str`` (both read in
``fleet_runtime.slot_state``, which imports next to nothing),
``factory_reset_state(layout, version) -> None``, and ``boot(layout) -> dict``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO

from fleet_runtime import bundle, durable, slot_backends
from fleet_runtime.bundle import BundleError, Keyring, Manifest
from fleet_runtime.labhooks import check_disk_space
from fleet_runtime.layout import (
    Layout,
    atomic_write,
    atomic_write_json,
    read_json,
)

# The reading side lives in slot_state (a health call imports only that); named here too.
from fleet_runtime.slot_state import FORMAT as FORMAT
from fleet_runtime.slot_state import State as State
from fleet_runtime.slot_state import active_slot as active_slot
from fleet_runtime.slot_state import committed_version as committed_version
from fleet_runtime.slot_state import incoming_dir as incoming_dir
from fleet_runtime.slot_state import other as other
from fleet_runtime.slot_state import read_selftest as read_selftest
from fleet_runtime.slot_state import read_state as read_state
from fleet_runtime.slot_state import record as record
from fleet_runtime.slot_state import selftest_file as selftest_file
from fleet_runtime.slot_state import software_version as software_version
from fleet_runtime.slot_state import summary as summary

DEFAULT_TRIALS = 3
HOOK_TIMEOUT_S = 60.0
MANIFEST_IN_SLOT = f"{bundle.RESERVED_PREFIX}/manifest.json"
CRASH_ENV = "FLEET_AGENT_CRASH_AT"  # power-loss tests: "N", "label" or "label:N"
PAUSE_ENV = "FLEET_AGENT_PAUSE"  # power-loss tests: "1" = SIGSTOP at the first point crossed


class Event(str, Enum):
    INSTALL = "install"
    WRITTEN = "written"
    INSTALL_FAILED = "install-failed"
    DISCARD = "discard"
    ACTIVATE = "activate"
    BOOT = "boot"
    BOOT_TRIAL = "boot-trial"
    FALLBACK = "fallback"
    COMMIT = "commit"
    ROLLBACK = "rollback"
    DISARMED = "disarmed"  # the bootloader never heard of the activation (a cut-short activate)


S, E = State, Event
TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.IDLE, E.INSTALL): S.INSTALLING,
    (S.INSTALLED, E.INSTALL): S.INSTALLING,
    (S.ACTIVATED, E.INSTALL): S.INSTALLING,
    (S.INSTALLING, E.INSTALL): S.INSTALLING,  # re-run after an interruption
    (S.INSTALLING, E.WRITTEN): S.INSTALLED,
    (S.INSTALLING, E.INSTALL_FAILED): S.IDLE,
    (S.INSTALLING, E.DISCARD): S.IDLE,  # booted in the middle of an install
    (S.INSTALLED, E.ACTIVATE): S.ACTIVATED,
    (S.ACTIVATED, E.ACTIVATE): S.ACTIVATED,
    (S.ACTIVATED, E.DISARMED): S.INSTALLED,
    (S.IDLE, E.BOOT): S.IDLE,
    (S.INSTALLED, E.BOOT): S.INSTALLED,
    (S.ACTIVATED, E.BOOT_TRIAL): S.TRIAL,
    (S.TRIAL, E.BOOT_TRIAL): S.TRIAL,
    (S.TRIAL, E.FALLBACK): S.IDLE,
    (S.ACTIVATED, E.FALLBACK): S.IDLE,  # only reachable with trials_left=0 written by hand
    (S.TRIAL, E.COMMIT): S.IDLE,
    (S.TRIAL, E.ROLLBACK): S.IDLE,
    (S.ACTIVATED, E.ROLLBACK): S.IDLE,
    (S.INSTALLED, E.ROLLBACK): S.IDLE,
}


SlotError = slot_backends.SlotError  # a verb refused or failed; the state on disk is valid


# ---------------------------------------------------------------------------- state file

_crossings: dict[str, int] = {}
_paused: list[bool] = []


def crash_point(label: str) -> None:
    """Test hook for the power-loss suite: SIGKILL ourselves at a chosen point.

    ``FLEET_AGENT_CRASH_AT=7`` dies at the 7th point crossed, ``=write:3`` at the
    third ``write`` point. ``FLEET_AGENT_PAUSE=1`` stops the process (SIGSTOP) at
    the first point, so a test knows the step has begun before it times a kill.
    Unset (always, outside tests) they cost two lookups.
    """
    if os.environ.get(PAUSE_ENV) and not _paused:
        _paused.append(True)
        os.kill(os.getpid(), signal.SIGSTOP)
    target = os.environ.get(CRASH_ENV)
    if not target:
        return
    want, _, nth = target.partition(":") if not target.isdigit() else ("", "", target)
    key = want if want else ""
    if want and want != label:
        return
    _crossings[key] = _crossings.get(key, 0) + 1
    if _crossings[key] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def crossings() -> int:
    """Points crossed so far in this process (the power-loss suite sizes its trials with it)."""
    return _crossings.get("", 0)


def _persist(layout: Layout, doc: dict[str, Any]) -> None:
    crash_point("before-persist")
    doc["updated_at"] = time.time()
    atomic_write_json(layout.boot_json, doc)
    crash_point("after-persist")


def _transition(layout: Layout, doc: dict[str, Any], event: Event,
                **changes: Any) -> dict[str, Any]:
    state = State(doc["state"])
    nxt = TRANSITIONS.get((state, event))
    if nxt is None:
        raise SlotError("wrong-state", f"cannot {event.value} while {state.value}: "
                        f"{_hint(doc)}")
    doc.update(changes, state=nxt.value)
    _persist(layout, doc)
    return doc


def _hint(doc: dict[str, Any]) -> str:
    return {
        State.IDLE.value: "install a bundle first",
        State.INSTALLING.value: "an install was interrupted; run install again",
        State.INSTALLED.value: "activate the installed slot or install again",
        State.ACTIVATED.value: f"reboot to try slot {doc.get('pending')}",
        State.TRIAL.value: f"slot {doc.get('active')} is on trial; commit or rollback first",
    }[doc["state"]]


def _backend(layout: Layout) -> slot_backends.SlotBackend:
    return slot_backends.for_layout(layout, crash_point)


# ---------------------------------------------------------------------------- the contract


def factory_reset_state(layout: Layout, version: str) -> None:
    """Factory state: slot a holds `version`, committed; slot b empty."""
    atomic_write_json(
        layout.boot_json,
        {
            "format": FORMAT, "state": State.IDLE.value, "active": "a", "committed_slot": "a",
            "pending": None, "trials_left": 0, "boots": 0, "last_error": None,
            "slots": {"a": {"version": version, "committed": True, "status": "committed"},
                      "b": None},
        },
    )
    _backend(layout).point(layout, "a")


# ---------------------------------------------------------------------------- paths


def staging_dir(layout: Layout, slot: str) -> Path:
    return layout.slots / f".staging-{slot}"


def slot_manifest(layout: Layout, slot: str) -> Manifest | None:
    path = layout.slot(slot) / MANIFEST_IN_SLOT
    return bundle.parse_manifest(path.read_bytes()) if path.exists() else None


def _remove_tree(layout: Layout, path: Path) -> None:
    """Rename aside, then delete, so a half-deleted tree is never mistaken for a slot."""
    if not path.exists():
        return
    trash = layout.slots / f".trash-{path.name.lstrip('.')}-{os.getpid()}-{time.monotonic_ns()}"
    durable.replace(path, trash)
    crash_point("after-trash")
    shutil.rmtree(trash, ignore_errors=True)


def _clean_leftovers(layout: Layout, keep_staging: bool) -> None:
    for tmp in layout.state.glob(f".{layout.boot_json.name}.*.tmp"):
        tmp.unlink(missing_ok=True)  # a power cut inside atomic_write leaves its temp file
    for path in layout.slots.glob(".*") if layout.slots.is_dir() else []:
        if path.name.startswith(".trash-") or (
                path.name.startswith(".staging-") and not keep_staging):
            shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------- install


def _device(layout: Layout) -> dict[str, Any]:
    device = read_json(layout.device_json, default=None)
    if device is None:
        raise SlotError("not-provisioned", f"no device identity at {layout.device_json}")
    return dict(device)


def _check_space(layout: Layout, manifest: Manifest) -> None:
    check_disk_space(layout)
    free = shutil.disk_usage(layout.state).free
    if manifest.total_size + (16 << 20) > free:
        raise SlotError("no-space", f"bundle needs {manifest.total_size} bytes, {free} free "
                        f"under {layout.state}; free space and install again")


def _begin_install(layout: Layout, doc: dict[str, Any], manifest: Manifest) -> str:
    """Checks that need the manifest, then persist `installing` before writing anything."""
    device = _device(layout)
    committed = record(doc, doc["committed_slot"]).get("version")
    bundle.check_compatible(
        manifest, hardware=str(device.get("hardware")), arch=str(device.get("arch")),
        current=software_version(layout), committed=committed,
    )
    _check_space(layout, manifest)
    backend = _backend(layout)
    if doc["state"] == State.ACTIVATED.value:
        backend.next_boot(layout, doc["active"])  # the slot about to be overwritten must not boot
    backend.point(layout, doc["active"])
    target = other(doc["active"])
    slots = dict(doc["slots"])
    slots[target] = {"version": manifest.version, "name": manifest.name, "committed": False,
                     "status": "installing"}
    _transition(layout, doc, Event.INSTALL, slots=slots, pending=None, trials_left=0)
    shutil.rmtree(staging_dir(layout, target), ignore_errors=True)
    staging_dir(layout, target).mkdir(parents=True)
    return target


def _sink(layout: Layout, root: Path) -> bundle.DirectorySink:
    def before_write() -> None:
        check_disk_space(layout)
        crash_point("write")

    return bundle.DirectorySink(root, before_write)


def _finish_install(layout: Layout, doc: dict[str, Any], slot: str, manifest: Manifest) -> None:
    staging = staging_dir(layout, slot)
    atomic_write(staging / MANIFEST_IN_SLOT, manifest.raw)
    _remove_tree(layout, layout.slot(slot))
    durable.replace(staging, layout.slot(slot))
    crash_point("after-slot-rename")
    hook = run_hook(layout, slot, manifest, "post-install")
    if hook and not hook["ok"]:
        raise SlotError("hook-failed", f"post-install hook failed: {hook['reason']}")
    slots = dict(doc["slots"])
    slots[slot] = {
        "version": manifest.version, "name": manifest.name, "committed": False,
        "status": "installed", "manifest_sha256": manifest.digest, "key_id": manifest.key_id,
        "installed_at": time.time(), "size": manifest.total_size,
    }
    _transition(layout, doc, Event.WRITTEN, slots=slots)


def _fail_install(layout: Layout, doc: dict[str, Any], slot: str, code: str, message: str) -> None:
    shutil.rmtree(staging_dir(layout, slot), ignore_errors=True)
    slots = dict(doc["slots"])
    slots[slot] = {**record(doc, slot), "status": "failed", "reason": message}
    error = {"at": time.time(), "code": code, "message": message}
    _transition(layout, doc, Event.INSTALL_FAILED, slots=slots, last_error=error)


def install(
    layout: Layout, stream: BinaryIO, keyring: Keyring | None = None,
    on_progress: bundle.Progress | None = None,
) -> dict[str, Any]:
    """Stream a bundle into the inactive slot; verify everything before it counts.

    Refusals before the first payload byte (signature, key, hardware, arch,
    versions, space) leave boot.json untouched; failures while writing end in
    ``idle`` with the active slot untouched and the error recorded.
    """
    doc = read_state(layout)
    if doc["state"] == State.TRIAL.value:
        raise SlotError("wrong-state", _hint(doc))
    ring = keyring if keyring is not None else Keyring.from_dir(layout.release_keys)
    target: list[str] = []
    reader = bundle.CountingReader(stream)

    def on_manifest(manifest: Manifest) -> None:
        target.append(_begin_install(layout, doc, manifest))

    try:
        manifest = _read_into_staging(layout, reader, ring, on_manifest, target, on_progress)
        received = reader.drain()
        _finish_install(layout, doc, target[0], manifest)
    except (BundleError, SlotError, OSError) as exc:
        if target:
            code = getattr(exc, "code", "os-error")
            _fail_install(layout, doc, target[0], code, _message(exc))
        raise
    return {"slot": target[0], "name": manifest.name, "version": manifest.version,
            "bytes": manifest.total_size, "files": len(manifest.files), "state": doc["state"],
            "bundle_bytes": received}


def _read_into_staging(
    layout: Layout, stream: Any, ring: Keyring, on_manifest: Callable[[Manifest], None],
    target: list[str], on_progress: bundle.Progress | None,
) -> Manifest:
    sink: list[bundle.DirectorySink] = []

    class _LazySink:
        """The staging dir exists only once the manifest is accepted."""

        def begin(self, entry: bundle.FileEntry) -> None:
            if not sink:
                sink.append(_sink(layout, staging_dir(layout, target[0])))
            sink[0].begin(entry)

        def write(self, data: bytes) -> None:
            sink[0].write(data)

        def end(self, entry: bundle.FileEntry) -> None:
            sink[0].end(entry)

    try:
        return bundle.read_bundle(stream, ring, _LazySink(), on_manifest, on_progress)
    finally:
        if sink:
            sink[0].abort()


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc} ({exc.filename or 'no file'})"
    return str(getattr(exc, "message", exc))


# ---------------------------------------------------------------------------- activate / boot


def activate(layout: Layout, trials: int = DEFAULT_TRIALS) -> dict[str, Any]:
    """Mark the installed slot as the next boot, with `trials` boots to prove itself."""
    if trials < 1:
        raise SlotError("usage", "trials must be at least 1")
    doc = read_state(layout)
    slot = other(doc["active"]) if doc["state"] == State.INSTALLED.value else doc["pending"]
    _transition(layout, doc, Event.ACTIVATE, pending=slot, trials_left=trials)
    _backend(layout).next_boot(layout, slot)  # after persisting: a boot before it finds `activated`
    return {"pending": slot, "trials_left": trials, "version": record(doc, slot).get("version")}


def _boot_event(doc: dict[str, Any], verdict: slot_backends.Verdict | None) -> Event:
    if verdict is not None:  # the bootloader chose the slot; boot.json records its choice
        return {"trial": Event.BOOT_TRIAL, "fell-back": Event.FALLBACK,
                "not-armed": Event.DISARMED}[verdict.outcome]
    state = doc["state"]
    if state == State.INSTALLING.value:
        return Event.DISCARD
    if state in (State.ACTIVATED.value, State.TRIAL.value):
        return Event.BOOT_TRIAL if doc["trials_left"] > 0 else Event.FALLBACK
    return Event.BOOT


# A slot's reason when its trial boots ran out; resume reads it to tell a fallback apart.
FALLBACK_REASON = "no commit within its trial boots"


def _boot_changes(doc: dict[str, Any], event: Event,
                  verdict: slot_backends.Verdict | None) -> dict[str, Any]:
    slots = dict(doc["slots"])
    if event is Event.DISCARD:
        slot = other(doc["active"])
        slots[slot] = {**record(doc, slot), "status": "failed", "reason": "install interrupted"}
        return {"slots": slots, "pending": None}
    if event is Event.BOOT_TRIAL:
        slots[doc["pending"]] = {**record(doc, doc["pending"]), "status": "trial"}
        left = verdict.trials_left if verdict else doc["trials_left"] - 1
        return {"slots": slots, "active": doc["pending"], "trials_left": left}
    if event is Event.DISARMED:
        error = {"at": time.time(), "code": "not-armed", "message": f"slot {doc['pending']} "
                 "was activated but the bootloader was not told before a power cut; activate "
                 "it again"}
        return {"pending": None, "trials_left": 0, "last_error": error}
    if event is Event.FALLBACK:
        failed = doc["active"] if doc["active"] != doc["committed_slot"] else doc["pending"]
        slots[failed] = {**record(doc, failed), "status": "failed", "reason": FALLBACK_REASON}
        error = {"at": time.time(), "code": "fallback",
                 "message": f"slot {failed} was not committed after its trial boots"}
        return {"slots": slots, "active": doc["committed_slot"], "pending": None,
                "trials_left": 0, "last_error": error}
    return {}


def boot(layout: Layout) -> dict[str, Any]:
    """What a (real or lab) boot does first: pick the slot, then run its self-test."""
    doc = read_state(layout)
    backend = _backend(layout)
    verdict = backend.verdict(layout, doc)
    event = _boot_event(doc, verdict)
    changes = _boot_changes(doc, event, verdict)
    _transition(layout, doc, event, boots=int(doc["boots"]) + 1, **changes)
    backend.point(layout, doc["active"])
    if doc["active"] == doc["committed_slot"]:
        backend.confirm(layout)  # a committed slot keeps its bootloader retries
    _clean_leftovers(layout, keep_staging=False)
    selftest = _selftest(layout, doc["active"])
    return {"event": event.value, "slot": doc["active"], "version": software_version(layout),
            "state": doc["state"], "trials_left": doc["trials_left"], "selftest": selftest}


def _selftest(layout: Layout, slot: str) -> dict[str, Any]:
    result = {"slot": slot, "ok": True, "reason": "no selftest hook", "at": time.time()}
    try:
        manifest = slot_manifest(layout, slot)
    except (OSError, BundleError) as exc:
        manifest, result = None, {**result, "ok": False, "reason": f"slot manifest: {exc}"}
    hook = run_hook(layout, slot, manifest, "selftest") if manifest else None
    if hook:
        result.update(ok=hook["ok"], reason=hook["reason"])
    atomic_write_json(selftest_file(layout), result)
    return result


def run_hook(layout: Layout, slot: str, manifest: Manifest | None,
             hook: str) -> dict[str, Any] | None:
    """Run a signed hook from the slot (its hash was checked at install). None if absent."""
    path = manifest.hooks.get(hook) if manifest else None
    if not path:
        return None
    slot_dir = layout.slot(slot)
    env = {**os.environ, "FLEET_ROOT": str(layout.root), "FLEET_SLOT": slot,
           "FLEET_SLOT_DIR": str(slot_dir)}
    try:
        proc = subprocess.run([str(slot_dir / path)], cwd=slot_dir, env=env, capture_output=True,
                              text=True, timeout=HOOK_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"ok": False, "reason": f"{hook} hook did not run: {exc}"}
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
    ok = proc.returncode == 0
    return {"ok": ok, "reason": tail[0] if not ok else "", "exit": proc.returncode}


# ---------------------------------------------------------------------------- commit / rollback


def commit(layout: Layout, force: bool = False) -> dict[str, Any]:
    """Make the slot on trial permanent. Idempotent: committing a committed slot is a no-op."""
    doc = read_state(layout)
    if doc["state"] == State.IDLE.value:
        sync_release_keys(layout, doc["active"])
        return {"changed": False, "slot": doc["active"], "version": software_version(layout)}
    selftest = read_selftest(layout) or {}
    if doc["state"] == State.TRIAL.value and not selftest.get("ok", True) and not force:
        raise SlotError("selftest-failed", f"slot {doc['active']} failed its self-test "
                        f"({selftest.get('reason')}); roll back, or commit --force")
    slot, previous = doc["active"], other(doc["active"])
    if doc["state"] == State.TRIAL.value:
        # Before persisting: a cut between leaves a trial the bootloader keeps booting,
        # where the other order could leave a commit that the bootloader falls back from.
        _backend(layout).confirm(layout)
    slots = dict(doc["slots"])
    slots[slot] = {**record(doc, slot), "committed": True, "status": "committed"}
    if slots.get(previous):
        slots[previous] = {**record(doc, previous), "committed": False, "status": "previous"}
    _transition(layout, doc, Event.COMMIT, slots=slots, committed_slot=slot, pending=None,
                trials_left=0, last_error=None)
    sync_release_keys(layout, slot)
    return {"changed": True, "slot": slot, "version": software_version(layout)}


def rollback(layout: Layout, reason: str = "rolled back by operator") -> dict[str, Any]:
    """Go back to the committed slot: the ``current`` link and the next boot name it now,
    the running processes keep the dropped slot's files until the reboot."""
    doc = read_state(layout)
    backend = _backend(layout)
    if doc["state"] == State.IDLE.value:
        backend.point(layout, doc["active"])  # a re-run after a cut finishes the switch
        return {"changed": False, "slot": doc["active"], "version": software_version(layout)}
    if doc["state"] == State.INSTALLING.value:
        raise SlotError("wrong-state", _hint(doc))
    dropped = doc["active"] if doc["state"] == State.TRIAL.value else other(doc["active"])
    backend.next_boot(layout, doc["committed_slot"])  # before persisting, as commit
    slots = dict(doc["slots"])
    slots[dropped] = {**record(doc, dropped), "status": "failed", "reason": reason}
    error = {"at": time.time(), "code": "rollback", "message": reason}
    _transition(layout, doc, Event.ROLLBACK, slots=slots, active=doc["committed_slot"],
                pending=None, trials_left=0, last_error=error)
    backend.point(layout, doc["active"])
    return {"changed": True, "slot": doc["active"], "version": software_version(layout),
            "dropped": dropped}


def sync_release_keys(layout: Layout, slot: str) -> list[str]:
    """Install keys a committed bundle adds (key rotation: new key shipped, signed by the old)."""
    try:
        manifest = slot_manifest(layout, slot)
    except (OSError, BundleError):
        return []
    added = []
    for kid, pem in (manifest.add_keys if manifest else {}).items():
        key = bundle.load_public_key(pem.encode(), f"add_keys[{kid}]")
        if bundle.key_id(key) != kid:
            continue  # a mislabelled key is ignored, never trusted under another id
        path = layout.release_keys / f"{kid}.pub"
        if not path.exists():
            atomic_write(path, bundle.public_pem(key))
            added.append(kid)
    return added


# ---------------------------------------------------------------------------- inspection


def verify_slot(layout: Layout, slot: str) -> list[str]:
    """Re-hash an installed slot against its manifest; the list of problems (empty = intact)."""
    manifest = slot_manifest(layout, slot)
    if manifest is None:
        return []  # a factory image carries no bundle manifest
    problems = []
    for entry in manifest.files:
        path = layout.slot(slot) / entry.path
        if not path.is_file() or path.stat().st_size != entry.size:
            problems.append(f"slot {slot}: {entry.path} missing or wrong size")
        elif bundle.sha256_file(path) != entry.sha256:
            problems.append(f"slot {slot}: {entry.path} hash mismatch")
    return problems


def problems(layout: Layout) -> list[str]:
    """Invariants a booted device must satisfy; empty when the state is consistent."""
    doc = read_state(layout)
    out: list[str] = []
    state, active, committed = doc["state"], doc["active"], doc["committed_slot"]
    if state not in {s.value for s in State}:
        return [f"unknown state {state!r}"]
    for slot in {active, committed}:
        kept = record(doc, slot)
        if not kept.get("version"):
            out.append(f"slot {slot} is {'active' if slot == active else 'committed'} "
                       "but holds no version")
        if kept.get("manifest_sha256") and not layout.slot(slot).is_dir():
            out.append(f"slot {slot} has no image directory")
    if not record(doc, committed).get("committed"):
        out.append(f"committed slot {committed} is not marked committed")
    expect_pending = state in (State.ACTIVATED.value, State.TRIAL.value)
    if expect_pending != (doc["pending"] is not None):
        out.append(f"state {state} with pending={doc['pending']}")
    if state == State.TRIAL.value and not (doc["pending"] == active != committed):
        out.append("trial state but the active slot is not the pending one")
    if state in (State.IDLE.value, State.INSTALLED.value, State.ACTIVATED.value) and \
            active != committed:
        out.append(f"state {state} but active {active} != committed {committed}")
    linked = slot_backends.link_target(layout)
    if linked is not None and linked != active:
        out.append(f"the {slot_backends.LINK} link names slot {linked}, slot {active} is active")
    return out
