"""Everything lab-specific the device runtime does, in one place.

A lab device is a simulated appliance: a ``FLEET_ROOT`` other than ``/`` on a
host it shares with other devices. The lab (controller side, ``fleet lab``)
writes ``FLEET_ROOT/.lab/``: ``faults.json`` with the fault switches it sets
(``slow``, ``disk-full``, ...) and ``hardware.json`` with the box's serial. The
runtime reads that data only through the functions here, so no other runtime
module asks "is this the lab?"; on a real appliance (``FLEET_ROOT=/``, no
``.lab/``) each hook is the real behaviour or does nothing.

>>> lay = Layout(Path("/tmp/dev1"))
>>> is_simulated(lay)
True
"""

from __future__ import annotations

import errno
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleet_runtime.layout import Layout, read_json

LAB_DIR = ".lab"


class NotOnThisDevice(Exception):
    """An action a lab device cannot take on itself (``code`` is stable)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def lab_dir(layout: Layout) -> Path:
    return layout.root / LAB_DIR


def shares_host(layout: Layout) -> bool:
    """A lab device (the lab wrote ``.lab/``): its host's CPUs are not its own."""
    return lab_dir(layout).is_dir()


def is_simulated(layout: Layout) -> bool:
    """A root other than ``/`` is a simulated device: the machine it runs on is not its own
    (rebooting it would reboot the host; its firmware serial is the host's)."""
    return layout.root.resolve() != Path("/")


# ---------------------------------------------------------------------------- fault switches


def faults(layout: Layout) -> dict[str, Any]:
    """The lab's fault switches for this device (empty on real hardware)."""
    try:
        return dict(json.loads(layout.lab_faults.read_text()))
    except (OSError, ValueError):
        return {}


def disk_full(layout: Layout) -> bool:
    return bool(faults(layout).get("disk-full"))


def check_disk_space(layout: Layout) -> None:
    """Raise ENOSPC when the lab's disk-full fault is set; real disks raise it themselves."""
    if disk_full(layout):
        raise OSError(errno.ENOSPC, "No space left on device (lab fault)", str(layout.root))


def slow_start(layout: Layout) -> None:
    """The lab's `slow` fault: every agent command starts that many seconds late."""
    delay = faults(layout).get("slow")
    if delay:
        time.sleep(float(delay))


def hardware_serial(layout: Layout) -> tuple[bool, str | None]:
    """(True, serial) when the lab names this box's serial, else (False, None)."""
    path = lab_dir(layout) / "hardware.json"
    if not path.exists():
        return False, None
    value = json.loads(path.read_text()).get("serial")
    return True, str(value) if value else None


def booted_at(layout: Layout) -> float | None:
    """When the lab last booted this device (``run/fleet/boot-time.json``, written by the
    lab's reboot); None on real hardware, whose uptime is the kernel's."""
    booted = read_json(layout.run / "boot-time.json", default=None)
    return float(booted["booted_at"]) if booted else None


# ---------------------------------------------------------------------------- reboot


def reboot(layout: Layout, boot_in_place: Callable[[Layout], Any] | None = None) -> bool:
    """Reboot the device. True when the boot already happened here (a simulated device runs
    `boot_in_place`, the same boot logic, in this process); False when the machine goes down
    in a moment (this process will not see the boot). A simulated device without
    `boot_in_place` refuses: the lab power-cycles it (`fleet lab reboot NAME`)."""
    if is_simulated(layout):
        if boot_in_place is None:
            raise NotOnThisDevice("lab-device", f"FLEET_ROOT is {layout.root}: this is a lab "
                                  "device; reboot it with `fleet lab reboot NAME`")
        boot_in_place(layout)
        return True
    import subprocess  # here: every agent call imports this module, few of them reboot

    # Detached, so the caller can answer (or report a job) before the machine goes down.
    subprocess.Popen(["sh", "-c", "sleep 2; systemctl reboot || /sbin/reboot"],
                     start_new_session=True, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    return False
