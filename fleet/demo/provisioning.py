"""Demo step: a new site from the factory, provisioned by USB drive, online with pinned keys."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from fleet.demo import Demo
from fleet.errors import FleetError

DEMO_ORG = "edgefleet-demo"
NEW_SITE = "denver"  # the lab's 4th site: `lab up --sites 4` adds it


def _ca_ready(demo: Demo) -> None:
    """Use the project's CA; a demo CA whose passphrase is gone (an earlier run) is replaced."""
    from fleet.pki import PASSPHRASE_ENV

    ca = demo.project / "certs/ca.crt"
    given = bool(os.environ.get(PASSPHRASE_ENV))
    if not given:
        # Lives only in this process and its children, never on disk or screen.
        os.environ[PASSPHRASE_ENV] = secrets.token_urlsafe(24)
    if not ca.exists():
        demo.fleet("ca", "init", "--org", DEMO_ORG)
        return
    shown = json.loads(demo.fleet("ca", "show", "--json", json_out=True).stdout)
    if given:
        return
    if f"O={DEMO_ORG}" not in shown["subject"]:
        raise FleetError(
            "this project has its own fleet CA",
            where=str(ca),
            fix="set FLEET_CA_PASSPHRASE to run the provisioning demo step",
        )
    demo.say(
        "The CA from an earlier demo run is locked with a passphrase nobody kept: "
        "a new demo CA replaces it."
    )
    demo.fleet("ca", "init", "--org", DEMO_ORG, "--force")


def step_provisioning(demo: Demo) -> None:
    demo.say(
        "A new site arrives from the factory. Each box gets its identity from a USB drive: "
        "a per-device archive signed by the fleet CA, whose SSH host key the controller "
        "pins the moment the archive is built (no trust on first use)."
    )
    _ca_ready(demo)
    demo.fleet("lab", "up", "--factory", "--sites", "4", "--devices-per-site", "3")
    devices = [f"{NEW_SITE}-{i:02d}" for i in (1, 2, 3)]
    for name in devices:  # a second demo run finds them provisioned: press reset first
        if _provisioned(demo, name):
            demo.fleet("lab", "reset", name)
    demo.fleet("provision", "all", "-i", "lab", "--site", NEW_SITE, "--valid-for", "2h")
    demo.say(
        "One drive for the site visit: each box takes the archive with its own serial "
        "and writes its provisioning log back to the drive."
    )
    drive = demo.project / ".fleet/lab/usb-drive"
    drive.mkdir(parents=True, exist_ok=True)
    archives = demo.project / ".fleet/archives"
    for name in devices:
        demo.fleet(
            "provision",
            "usb",
            name,
            "--mount",
            str(drive),
            "--force",
            "--archive",
            str(archives / f"edgefleet-{name}.zip"),
        )
    for name in devices:
        demo.fleet("lab", "usb", name, str(drive))
    demo.fleet("provision", "wipe", "--mount", str(drive), "--force")
    demo.say("The new site answers over SSH with the host keys pinned from its archives:")
    health = demo.fleet("health", "-i", "lab", "--site", NEW_SITE, check=False)
    if health.returncode == 2:
        raise FleetError(f"a device at {NEW_SITE} is unreachable after provisioning")


def _provisioned(demo: Demo, name: str) -> bool:
    return Path(demo.project / ".fleet/lab/devices" / name / "etc/fleet/device.json").exists()
