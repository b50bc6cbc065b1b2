"""A lab device's reboot, and the power button that asks for one.

    python -m fleet.lab.reboot PROJECT_ROOT DEVICE           # the reboot itself
    python -m fleet.lab.reboot --wait PROJECT_ROOT DEVICE    # the power button

The reboot runs detached, started by `Lab.reboot` (own session, not the controller's
child in any way that matters): stop the device's SSH server, run the boot logic,
start it again. It writes ``<device root>/.lab/reboot.json`` (``{"ok": true, "boot":
{...}}`` or the error) for the process that asked; if that process is gone, the device
still comes back. `fleet lab reboot` starts it as a process of its own (the first form);
the power button forks itself for it, which costs no second interpreter start.

The power button is what the lab's inventory names as the device's ``power_cycle``
command (see fleet.reboot): it runs `Lab.reboot`, and prints where the device answers now
(``{"ok": true, "hostname": ..., "port": ...}``) or, on stderr, why it did not come back.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fleet.errors import FleetError
from fleet.lab import Lab
from fleet.project import Project


def main(argv: list[str]) -> int:
    if argv[:1] == ["--wait"]:
        return power_cycle(Path(argv[1]), argv[2])
    return Lab(Project.locate(Path(argv[0]))).reboot_and_answer(argv[1])


def power_cycle(root: Path, name: str) -> int:
    try:
        lab = Lab(Project.locate(root))
        lab.reboot(name, fork=True)
        dev = lab.device(name)
    except FleetError as exc:
        print(exc.line(), file=sys.stderr)
        return 1
    print(json.dumps({"ok": True, "hostname": dev.host, "port": dev.port}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
