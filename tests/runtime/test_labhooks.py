"""The runtime's lab hooks live in one module, fleet_runtime/labhooks.py, and act on the
data the lab writes under FLEET_ROOT/.lab; the rest of the runtime never asks for the lab."""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest
from fleet_runtime import labhooks
from fleet_runtime.layout import Layout, atomic_write_json

RUNTIME = Path(labhooks.__file__).resolve().parent
# How runtime code used to recognise a lab device (a branch on the root, or lab files).
LAB_MARKERS = re.compile(r'Path\("/"\)|lab_faults\(|\.is_lab\b|\.lab/|boot-time\.json|'
                         r'hardware\.json|root is not /')
# Layout names the lab's fault file as one of the device's paths: data, not a branch.
ALLOWED = {("layout.py", "    def lab_faults(self) -> Path:"),
           ("layout.py", '        return self.root / ".lab/faults.json"')}


def test_no_lab_branch_outside_the_hooks_module() -> None:
    found = []
    for path in sorted(RUNTIME.rglob("*.py")):
        if path.name == "labhooks.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if LAB_MARKERS.search(line) and (path.name, line) not in ALLOWED:
                found.append(f"{path.relative_to(RUNTIME)}:{number}: {line.strip()}")
    assert found == [], "lab logic outside fleet_runtime/labhooks.py:\n" + "\n".join(found)


@pytest.fixture
def lab_device(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "dev")
    (layout.root / ".lab").mkdir(parents=True)
    return layout


def test_fault_switches_come_from_the_file_the_lab_writes(lab_device: Layout) -> None:
    assert labhooks.faults(lab_device) == {} and not labhooks.disk_full(lab_device)
    labhooks.check_disk_space(lab_device)  # no fault: nothing raised
    atomic_write_json(lab_device.lab_faults, {"disk-full": True})
    with pytest.raises(OSError) as info:
        labhooks.check_disk_space(lab_device)
    assert info.value.errno == errno.ENOSPC


def test_identity_and_boot_time_written_by_the_lab(lab_device: Layout) -> None:
    assert labhooks.hardware_serial(lab_device) == (False, None)
    assert labhooks.booted_at(lab_device) is None
    atomic_write_json(lab_device.root / ".lab/hardware.json", {"serial": "LAB-42"})
    atomic_write_json(lab_device.run / "boot-time.json", {"booted_at": 1234.5})
    assert labhooks.hardware_serial(lab_device) == (True, "LAB-42")
    assert labhooks.booted_at(lab_device) == 1234.5
    assert labhooks.shares_host(lab_device) and labhooks.is_simulated(lab_device)


def test_a_simulated_device_reboots_in_place_or_refuses(lab_device: Layout) -> None:
    booted: list[Layout] = []
    assert labhooks.reboot(lab_device, booted.append) is True and booted == [lab_device]
    with pytest.raises(labhooks.NotOnThisDevice) as info:
        labhooks.reboot(lab_device)  # the agent's `reboot`: the lab power-cycles it instead
    assert info.value.code == "lab-device"
