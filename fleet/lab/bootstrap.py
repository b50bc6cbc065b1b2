"""The lab's side of `fleet device bootstrap`: a field device of the lab is "installed" by
making the device layout under its FLEET_ROOT (its agent already runs from the controller's
venv) and "rebooted" by the lab. The CLI picks this installer for a lab address; the domain
(`fleet.bootstrap`) only knows the `Installer` protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleet.bootstrap import FirstContact, remote_root, run
from fleet.lab.devices import Lab
from fleet.project import Project
from fleet.transport import SSHSession


@dataclass
class LabInstaller:
    """A lab device: its agent already runs from the controller's venv (FLEET_ROOT set by its
    SSH server); what postinst does is done under its root; `fleet lab reboot` restarts it."""

    lab: Any
    name: str

    def install(self, session: SSHSession) -> str:
        dirs = ["etc/fleet/release-keys", "var/lib/fleet/apps", "var/lib/fleet/app-storage",
                "var/log/fleet/apps", "run/fleet"]
        run(session, ["fleet-agent", "--version"], "running the agent")
        root = remote_root(session)
        run(session, ["mkdir", "-p", *[str(root / d) for d in dirs]], "making the layout")
        return f"layout under FLEET_ROOT {root}"

    def restart(self, session: SSHSession, project: Project, contact: FirstContact,
                device: str) -> None:
        self.lab.reboot(self.name)


def lab_installer_for(project: Project, contact: FirstContact) -> LabInstaller | None:
    """The lab's installer when a lab device listens at the contact's address."""
    lab = Lab(project)
    for name, dev in lab.devices().items():
        if (dev.host, dev.port) == (contact.host, contact.port):
            return LabInstaller(lab, name)
    return None
