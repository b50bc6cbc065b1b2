"""A stand-in for L4T's ``nvbootctrl`` (rootfs A/B) and the bootloader behind it, for tests.

The real tool needs a Jetson flashed with ``ROOTFS_AB=1``. This one keeps the
bootloader's slot data in a JSON file under the device root
(``$FLEET_ROOT/.bootloader/nvbootctrl.json``) and behaves as Jetson Linux's
"Update and Redundancy" documentation describes for the rootfs target:

* each slot (0 = A, 1 = B) has a retry count and a status, ``normal`` or
  ``unbootable``; the *current* slot is the one running, the *active* slot the
  one the next boot starts;
* ``set-active-boot-slot N`` makes N the active slot with a full retry count;
* ``mark-boot-successful`` gives the current slot back its full retry count;
* at each boot the bootloader (``power_on`` here, called by the test at its
  "reboot") starts the active slot and counts one retry off it; a slot with no
  retries left is marked unbootable and the other slot becomes active and boots.

Commands: ``-t rootfs`` with ``get-number-slots``, ``get-current-slot``,
``get-active-boot-slot``, ``set-active-boot-slot N``, ``mark-boot-successful``,
``is-slot-bootable N``, ``is-slot-marked-successful N``, ``dump-slots-info``
(the output wording of L4T R35/R36). Only the rootfs target is modelled.

As a program it is run through the ``nvbootctrl`` wrapper ``install`` writes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

STATE = ".bootloader/nvbootctrl.json"
RETRY_COUNT = 3  # L4T's default; set at flash time
USAGE = ("usage: nvbootctrl -t rootfs {get-number-slots|get-current-slot|get-active-boot-slot|"
         "set-active-boot-slot N|mark-boot-successful|is-slot-bootable N|"
         "is-slot-marked-successful N|dump-slots-info}")


def state_path(root: Path) -> Path:
    return root / STATE


def flash(root: Path, retry_count: int = RETRY_COUNT) -> None:
    """A freshly flashed board: slot A current and active, both slots bootable."""
    slot = {"retry_count": retry_count, "status": "normal", "successful": True}
    save(root, {"retry_max": retry_count, "current": 0, "active": 0,
                "slots": [dict(slot), dict(slot)]})


def load(root: Path) -> dict[str, Any]:
    return dict(json.loads(state_path(root).read_text()))


def save(root: Path, doc: dict[str, Any]) -> None:
    """Atomically, as the bootloader's own storage: old or new, never half."""
    path = state_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(doc, indent=1))
    os.replace(temp, path)


def power_on(root: Path) -> int:
    """The bootloader's part of a boot: pick the slot, count a retry, fall back. Returns it."""
    doc = load(root)
    slot = doc["active"]
    if doc["slots"][slot]["retry_count"] == 0 or doc["slots"][slot]["status"] == "unbootable":
        doc["slots"][slot].update(status="unbootable", retry_count=0)
        slot = doc["active"] = 1 - slot
    if doc["slots"][slot]["status"] == "unbootable":
        raise RuntimeError("no bootable rootfs slot: the board stops in the UEFI menu")
    doc["slots"][slot]["retry_count"] -= 1
    doc["current"] = slot
    save(root, doc)
    return int(slot)


def dump(doc: dict[str, Any]) -> str:
    letter = "AB"
    lines = [f"Current rootfs slot: {letter[doc['current']]}",
             f"Active rootfs slot: {letter[doc['active']]}", "num_slots: 2"]
    lines += [f"slot: {n},             retry_count: {s['retry_count']},             "
              f"status: {s['status']}" for n, s in enumerate(doc["slots"])]
    return "\n".join(lines)


def _slot_arg(args: list[str]) -> int:
    if len(args) != 1 or args[0] not in ("0", "1"):
        raise ValueError("expected a slot number, 0 or 1")
    return int(args[0])


def run(root: Path, command: str, args: list[str]) -> tuple[int, str]:
    """One command against the state in `root`: (exit status, output)."""
    doc = load(root)
    current = doc["current"]
    if command == "get-number-slots":
        return 0, "2"
    if command == "get-current-slot":
        return 0, str(current)
    if command == "get-active-boot-slot":
        return 0, str(doc["active"])
    if command == "dump-slots-info":
        return 0, dump(doc)
    if command == "set-active-boot-slot":
        slot = _slot_arg(args)
        doc["active"] = slot
        doc["slots"][slot].update(retry_count=doc["retry_max"], status="normal",
                                  successful=False)
    elif command == "mark-boot-successful":
        doc["slots"][current].update(retry_count=doc["retry_max"], status="normal",
                                     successful=True)
    elif command == "is-slot-bootable":
        return (0 if doc["slots"][_slot_arg(args)]["status"] != "unbootable" else 1), ""
    elif command == "is-slot-marked-successful":
        return (0 if doc["slots"][_slot_arg(args)]["successful"] else 1), ""
    else:
        return 1, USAGE
    save(root, doc)
    return 0, ""


def main(argv: list[str]) -> int:
    if argv[:2] != ["-t", "rootfs"] or len(argv) < 3:
        print("this stand-in models the rootfs target only\n" + USAGE, file=sys.stderr)
        return 1
    root = Path(os.environ.get("FLEET_ROOT", "/"))
    try:
        code, out = run(root, argv[2], argv[3:])
    except (OSError, ValueError) as exc:
        print(f"nvbootctrl: {exc}", file=sys.stderr)
        return 1
    if out:
        print(out, file=sys.stdout if code == 0 else sys.stderr)
    return code


def install(bin_dir: Path) -> Path:
    """Write the ``nvbootctrl`` program into `bin_dir` (put it first on PATH); its path."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    tool = bin_dir / "nvbootctrl"
    # -I -S: stdlib only, so it starts in a few tens of milliseconds.
    tool.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I -S "{Path(__file__).resolve()}" "$@"\n')
    tool.chmod(0o755)
    return tool


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
