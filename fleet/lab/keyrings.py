"""Release keys on lab devices: `fleet firmware keygen --install-lab` trusts a new key on
every provisioned lab device, as an operator would reflash a real one's keyring.

>>> install_in_lab(project)                               # doctest: +SKIP
['berlin-01', 'berlin-02']
"""

from __future__ import annotations

from pathlib import Path

from fleet.firmware import export_keyring
from fleet.project import Project


def lab_keyrings(project: Project) -> list[Path]:
    """The keyring directories of existing lab devices (provisioned ones)."""
    devices = project.state_dir / "lab" / "devices"
    return sorted(p / "etc/fleet/release-keys" for p in devices.glob("*")
                  if (p / "etc/fleet/device.json").exists()) if devices.is_dir() else []


def install_in_lab(project: Project) -> list[str]:
    """Trust the project's release keys on every existing lab device; the device names."""
    names = []
    for ring_dir in lab_keyrings(project):
        export_keyring(project, ring_dir)
        names.append(ring_dir.parents[2].name)
    return names
