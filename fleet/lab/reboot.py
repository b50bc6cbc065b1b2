"""A lab device's reboot, run detached by `Lab.reboot` (own session, not the controller's
child in any way that matters): stop its SSH server, run the boot logic, start it again.

    python -m fleet.lab.reboot PROJECT_ROOT DEVICE

Writes ``<device root>/.lab/reboot.json`` (``{"ok": true, "boot": {...}}`` or the error)
for the process that asked; if that process is gone, the device still comes back.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fleet_runtime.layout import atomic_write_json

from fleet.errors import FleetError
from fleet.lab import Lab
from fleet.project import Project


def main(argv: list[str]) -> int:
    root, name = Path(argv[0]), argv[1]
    lab = Lab(Project.locate(root))
    answer_file = lab.root(name) / ".lab/reboot.json"
    try:
        boot = lab.reboot_here(name)
    except FleetError as exc:
        atomic_write_json(answer_file, {"ok": False, "error": exc.line()})
        return 1
    atomic_write_json(answer_file, {"ok": True, "boot": boot})
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
