"""A lab box's factory, first boot from a USB drive, and reset button.

The factory writes a serial and pins the fleet CA as the provisioning trust
anchor; ``fleet lab usb-boot`` runs the device's own first boot
(``fleet-agent provision --usb``) on the folder that stands for the drive;
``fleet lab reset`` wipes its identity as the real button would.

>>> lab_usb_boot(Lab(project), "berlin-01", Path("usb"))     # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fleet_runtime import provisioning as fmt
from fleet_runtime.layout import atomic_write

from fleet import pki
from fleet.agent import local_agent
from fleet.errors import DeviceError, UsageError
from fleet.project import Project
from fleet.provisioning.records import mark_provisioned, mark_reset
from fleet.transport import PENDING, known_hosts_name, pin_host_keys, pinned_lines


def lab_manufacture(project: Project, layout: Any, serial: str) -> None:
    """What the factory gives a lab box: its hardware serial and, when the project has a
    fleet CA, that CA's fingerprint pinned as the device's provisioning trust anchor."""
    atomic_write(layout.root / ".lab/hardware.json", (json.dumps({"serial": serial}) + "\n").encode(),
                 0o644)
    ca = pki.ca_paths(project).cert
    if ca.exists():
        anchor = fmt.trust_anchor_path(layout)
        anchor.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(
            anchor, (fmt.cert_fingerprint(pki.load_ca_cert(project)) + "\n").encode(), 0o644
        )


def move_pin(known_hosts: Path, hostname: str, old_port: int, new_port: int) -> bool:
    """Carry the key pinned for ``[host]:old_port`` over to ``new_port``; True if it moved."""
    if old_port == new_port or not known_hosts.exists():
        return False
    old, new = known_hosts_name(hostname, old_port), known_hosts_name(hostname, new_port)
    keys = [f for f in pinned_lines(known_hosts, old) if f[0] == old]
    if not keys:
        return False
    settled = [f for f in keys if f[3:] != [PENDING]]  # a pending key moves along, still pending
    pin_host_keys(known_hosts, {new: " ".join((settled or keys)[-1][1:3])})
    pending = [f for f in keys if f[3:] == [PENDING]]
    if settled and pending:
        pin_host_keys(known_hosts, {new: " ".join(pending[-1][1:3])}, beside=True)
    return True


def lab_usb_boot(lab: Any, name: str, drive: Path) -> dict[str, Any]:
    """Insert `drive` into lab device `name` and power it on: the device's own first boot
    (``fleet-agent provision --usb``), then the boot logic and its SSH server."""
    dev = lab.device(name)
    if not drive.is_dir():
        raise UsageError(
            f"no such directory {drive}", fix="pass the folder that stands for the drive"
        )
    lab.stop(name)  # power off: the drive is read at power-on
    answer = _agent(lab, dev, ["provision", "--usb", str(drive.resolve())])
    if not answer.get("ok"):
        error = answer.get("error") or {}
        lab.start(name)
        raise DeviceError(
            f"{name}: first boot refused the drive: {error.get('code')}: {error.get('message')}",
            where=str(drive / fmt.LOG_DIR / fmt.LOG_NAME),
            fix="fix the cause, build a new archive and insert the drive again",
        )
    lab.reboot(name)
    answer["registry"] = mark_provisioned(lab.project, name)
    from fleet.lab.mqtt import LabMqtt

    answer["mqtt"] = LabMqtt(lab.project).follow_provisioning(name, lab.root(name))
    return answer


def lab_factory_reset(lab: Any, name: str) -> dict[str, Any]:
    """Press the lab device's reset button: power off, ``fleet-agent reset`` (identity, keys,
    host key gone), manufacturing data written again (serial, this project's CA pinned)."""
    from fleet.lab.mqtt import LabMqtt

    dev = lab.device(name)
    lab.stop(name)
    LabMqtt(lab.project).stop_daemon(name, lab.root(name))  # its identity is about to go
    answer = _agent(lab, dev, ["reset"])
    if not answer.get("ok"):
        error = answer.get("error") or {}
        raise DeviceError(f"{name}: reset failed: {error.get('code')}: {error.get('message')}")
    lab_manufacture(lab.project, lab.layout(name), dev.serial)
    _mark_factory(lab, name)
    answer["registry"] = mark_reset(lab.project, name)
    return answer


def _mark_factory(lab: Any, name: str) -> None:
    # A reset box has no host key of its own any more: the next one comes from an archive.
    lab.update(name, factory=True)


def _agent(lab: Any, dev: Any, args: list[str]) -> dict[str, Any]:
    return local_agent(lab.root(dev.name)).answer(*args)
