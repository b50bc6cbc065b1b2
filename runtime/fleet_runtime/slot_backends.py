"""Where the two slots live and who picks the slot at boot: the backends behind ``slots``.

``slots`` keeps the update state machine (``boot.json``); a backend is the part that
reaches outside it. Two exist:

* ``directories`` (the default, and what the lab uses): each slot is a directory,
  ``/var/lib/fleet/slots/{a,b}``, and the runtime reads the running one through the
  ``current`` link next to them, switched atomically (a new link renamed over the old).
  Which slot boots is decided by ``boot.json`` alone. Works on any Linux.
* ``nvbootctrl``: Jetson rootfs A/B. L4T's bootloader decides which slot boots:
  ``activate`` marks the new slot active for the next boot
  (``nvbootctrl -t rootfs set-active-boot-slot N``), ``commit`` marks the running slot
  successful (``mark-boot-successful``), and a slot that used up its retry count without
  that is marked unbootable by the bootloader, which boots the other one. ``boot`` reads
  what the bootloader did (``dump-slots-info``) and records it. The slot directories and
  the ``current`` link are kept as in ``directories`` (docs/slot-backends.md).

The device names its backend in ``/etc/fleet/slots.json``, written at provisioning:

>>> parse_config({"backend": "nvbootctrl"}, "slots.json").name
'nvbootctrl'

Without the file the backend is ``directories``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fleet_runtime import durable
from fleet_runtime.layout import Layout, StateFileError, atomic_write_json, read_json

CONFIG_NAME = "slots.json"
LINK = "current"
NVBOOTCTRL_TIMEOUT_S = 30.0
SLOT_NUMBER = {"a": 0, "b": 1}  # L4T numbers the rootfs slots 0 (A, APP) and 1 (B, APP_b)
SLOT_NAME = {0: "a", 1: "b", "A": "a", "B": "b"}

Checkpoint = Callable[[str], None]

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "backend": {"enum": ["directories", "nvbootctrl"]},
        "nvbootctrl": {"type": "string", "minLength": 1,
                       "description": "the command, a name on PATH or an absolute path"},
    },
    "required": ["backend"],
    "additionalProperties": False,
}


class SlotError(Exception):
    """A verb refused or failed; the state on disk is valid (``code`` is stable).

    Defined here so that backends raise the error ``slots`` callers already catch;
    ``fleet_runtime.slots.SlotError`` is this class.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class Verdict:
    """What the bootloader did at this boot, in ``boot.json``'s terms.

    ``outcome``: ``trial`` (it booted the pending slot, ``trials_left`` retries to go),
    ``fell-back`` (it booted the committed slot although one was pending), or
    ``not-armed`` (the pending slot never reached the bootloader: an activation cut short).
    """

    outcome: str
    trials_left: int = 0


class SlotBackend(Protocol):
    """The hooks ``slots`` calls; each is idempotent, so a re-run after a power cut is safe."""

    name: str

    def point(self, layout: Layout, slot: str) -> None:
        """Point the runtime (the ``current`` link) at `slot`."""

    def next_boot(self, layout: Layout, slot: str) -> None:
        """Make the next boot start `slot` (a no-op where ``boot.json`` alone decides)."""

    def confirm(self, layout: Layout) -> None:
        """The running slot is good: the bootloader stops counting its retries."""

    def verdict(self, layout: Layout, doc: dict[str, Any]) -> Verdict | None:
        """The bootloader's account of this boot; None when ``boot.json`` decides."""


def _no_checkpoint(label: str) -> None:
    return None


# ---------------------------------------------------------------------------- directories


def link_target(layout: Layout) -> str | None:
    """The slot the ``current`` link names, None without a link."""
    link = layout.slots / LINK
    return os.readlink(link) if link.is_symlink() else None


@dataclass
class Directories:
    """Slots as directories; ``boot.json`` decides what boots."""

    checkpoint: Checkpoint = _no_checkpoint
    name: str = "directories"

    def point(self, layout: Layout, slot: str) -> None:
        for stale in layout.slots.glob(f".{LINK}-*.tmp"):
            stale.unlink(missing_ok=True)  # a power cut between making a link and renaming it
        if link_target(layout) == slot:
            return
        layout.slots.mkdir(parents=True, exist_ok=True)
        temp = layout.slots / f".{LINK}-{os.getpid()}.tmp"
        os.symlink(slot, temp)  # relative: the link stays right wherever the root is mounted
        self.checkpoint("link")
        durable.replace(temp, layout.slots / LINK)  # the rename, then its directory fsync'd
        self.checkpoint("after-link")

    def next_boot(self, layout: Layout, slot: str) -> None:
        return None

    def confirm(self, layout: Layout) -> None:
        return None

    def verdict(self, layout: Layout, doc: dict[str, Any]) -> Verdict | None:
        return None


# ---------------------------------------------------------------------------- nvbootctrl


@dataclass(frozen=True)
class BootSlots:
    """``nvbootctrl -t rootfs dump-slots-info``, parsed: slots by name (a, b)."""

    current: str
    active: str
    retries: dict[str, int] = field(default_factory=dict)
    unbootable: frozenset[str] = frozenset()


_DUMP_SLOT = re.compile(r"slot:\s*(\d+),\s*retry_count:\s*(\d+),\s*status:\s*(\w+)")
_DUMP_ROLE = re.compile(r"(Current|Active) rootfs slot:\s*([AB])\b")


def parse_dump(text: str) -> BootSlots:
    """Parse ``dump-slots-info`` output (L4T R35/R36 wording); ValueError when it is not that.

    >>> parse_dump("Current rootfs slot: A\\nActive rootfs slot: B\\nnum_slots: 2\\n"
    ...            "slot: 0,  retry_count: 3,  status: normal\\n"
    ...            "slot: 1,  retry_count: 2,  status: normal\\n").active
    'b'
    """
    roles = {m.group(1): SLOT_NAME[m.group(2)] for m in _DUMP_ROLE.finditer(text)}
    slots = {SLOT_NAME.get(int(m.group(1)), "?"): (int(m.group(2)), m.group(3))
             for m in _DUMP_SLOT.finditer(text)}
    if set(roles) != {"Current", "Active"} or set(slots) != {"a", "b"}:
        first = text.strip().splitlines()[:1] or ["no output"]
        raise ValueError(f"not rootfs slot information: {first[0][:80]!r}")
    return BootSlots(current=roles["Current"], active=roles["Active"],
                     retries={name: retry for name, (retry, _) in slots.items()},
                     unbootable=frozenset(n for n, (_, status) in slots.items()
                                          if status == "unbootable"))


def judge(doc: dict[str, Any], boot: BootSlots) -> Verdict | None:
    """Read a boot: which slot the bootloader started, against what ``boot.json`` expected.

    Pure, so the rules are tested as a table (tests/runtime/test_slot_backends.py).
    """
    state, committed, pending = doc["state"], doc["committed_slot"], doc["pending"]
    if state in ("activated", "trial") and pending:
        if boot.current == pending:
            return Verdict("trial", boot.retries.get(pending, 0))
        if state == "activated" and boot.active != pending and pending not in boot.unbootable:
            return Verdict("not-armed")
        return Verdict("fell-back")
    if boot.current != committed:
        return Verdict("wrong-slot")
    return None


@dataclass
class NvBootCtrl(Directories):
    """Jetson rootfs A/B: L4T's bootloader decides what boots; we arm, confirm and read it."""

    command: str = "nvbootctrl"
    name: str = "nvbootctrl"

    def next_boot(self, layout: Layout, slot: str) -> None:
        if self.slots(layout).active == slot:
            return
        self.checkpoint("bootctl")
        self._run(layout, "set-active-boot-slot", str(SLOT_NUMBER[slot]))
        self.checkpoint("after-bootctl")

    def confirm(self, layout: Layout) -> None:
        self.checkpoint("bootctl")
        self._run(layout, "mark-boot-successful")
        self.checkpoint("after-bootctl")

    def verdict(self, layout: Layout, doc: dict[str, Any]) -> Verdict | None:
        boot = self.slots(layout)
        found = judge(doc, boot)
        if found and found.outcome == "wrong-slot":
            committed = doc["committed_slot"]
            self.next_boot(layout, committed)
            raise SlotError("wrong-slot", f"the bootloader started slot {boot.current}, but "
                            f"slot {committed} is the committed one; it is set for the next "
                            "boot: reboot")
        return found

    def slots(self, layout: Layout) -> BootSlots:
        out = self._run(layout, "dump-slots-info")
        try:
            return parse_dump(out)
        except ValueError as exc:
            raise SlotError("bootctl-failed", f"{self.command} -t rootfs dump-slots-info: "
                            f"{exc}; is rootfs A/B enabled (flashed with ROOTFS_AB=1)?") from None

    def _run(self, layout: Layout, *args: str) -> str:
        exe = shutil.which(self.command)
        if exe is None:
            raise SlotError("bootctl-missing", f"{self.command} not found on PATH, but "
                            f"{config_path(layout)} names the nvbootctrl backend: install "
                            "L4T's tools or set \"backend\": \"directories\"")
        argv = [exe, "-t", "rootfs", *args]
        # FLEET_ROOT as for hooks: the real tool ignores it, a stand-in keeps its state there.
        env = {**os.environ, "FLEET_ROOT": str(layout.root)}
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, env=env,
                                  timeout=NVBOOTCTRL_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SlotError("bootctl-failed", f"{' '.join(argv)} did not run: {exc}") from None
        if proc.returncode != 0:
            tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
            raise SlotError("bootctl-failed", f"{' '.join(argv)} failed "
                            f"(exit {proc.returncode}): {tail[0]}")
        return proc.stdout


# ---------------------------------------------------------------------------- choosing


def parse_config(doc: Any, where: str, checkpoint: Checkpoint = _no_checkpoint) -> SlotBackend:
    """The backend a ``slots.json`` document names; SlotError naming the field if invalid."""
    import jsonschema  # here: every agent command reaches this module, few devices have the file

    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(CONFIG_SCHEMA).iter_errors(doc))
    if error is not None:
        at = "/".join(str(p) for p in error.absolute_path) or "top level"
        raise SlotError("bad-config", f"{where}: {at}: {error.message}; expected "
                        '{"backend": "directories"} or {"backend": "nvbootctrl"}')
    if doc["backend"] == "nvbootctrl":
        return NvBootCtrl(checkpoint=checkpoint, command=doc.get("nvbootctrl", "nvbootctrl"))
    return Directories(checkpoint=checkpoint)


def config_path(layout: Layout) -> Path:
    """Where provisioning writes the backend choice."""
    return layout.etc / CONFIG_NAME


def for_layout(layout: Layout, checkpoint: Checkpoint = _no_checkpoint) -> SlotBackend:
    """The device's backend, from ``/etc/fleet/slots.json`` (``directories`` without it)."""
    path = config_path(layout)
    try:
        doc = read_json(path, default=None)
    except StateFileError as exc:
        raise SlotError("bad-config", f"{exc}; rewrite it as "
                        '{"backend": "directories"} or {"backend": "nvbootctrl"}') from None
    return Directories(checkpoint) if doc is None else parse_config(doc, str(path), checkpoint)


def write_config(layout: Layout, backend: str, command: str | None = None) -> Path:
    """Provisioning's half: record the device's backend (validated first); the file's path."""
    doc: dict[str, Any] = {"backend": backend, **({"nvbootctrl": command} if command else {})}
    parse_config(doc, "slot backend")
    atomic_write_json(config_path(layout), doc)
    return config_path(layout)
