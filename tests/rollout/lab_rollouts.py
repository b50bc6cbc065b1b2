"""Helpers for rollout tests on a real lab: a project with a release key, a lab, bundles."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from ci_skips import in_ci
from labkit import HAVE_SSHD, require_ssh, start_lab

from fleet import firmware
from fleet import inventory as inv
from fleet.lab import Lab
from fleet.project import Project
from fleet.rollout import engine
from fleet.rollout.policy import Policy
from fleet.rollout.update import OtaWork

REPO = Path(__file__).resolve().parents[2]
SECRET = "correct-horse-battery"
SSH = "openssh" if HAVE_SSHD or in_ci() else "asyncssh"  # never asyncssh under CI


def lab_project(root: Path, sites: int, per_site: int, *, via_cli: bool = False) -> Lab:
    """A fleet project with a release key, and a lab whose devices trust it.

    via_cli: start the lab with a `fleet lab up` process (for tests whose rollouts run in
    another process: the SSH servers must not be this test process's children, or each
    one a reboot stops lingers as a zombie until this process reaps it)."""
    shutil.copytree(REPO / "firmware", root / "firmware")
    project = Project.locate(root)
    firmware.keygen(project, passphrase=SECRET.encode())
    if not via_cli:
        return start_lab(root, sites, per_site, SSH)
    require_ssh(SSH)
    subprocess.run([sys.executable, "-m", "fleet.cli.main", "--project", str(root), "lab", "up",
                    "--sites", str(sites), "--devices-per-site", str(per_site), "--ssh", SSH],
                   check=True, capture_output=True)
    return Lab(project)


def failing_selftest(*devices: str) -> str:
    """A self-test that fails on the named devices only (a unit whose camera the new
    runtime cannot drive): the device boots the new slot, fails, and is rolled back."""
    checks = "".join(
        f"if grep -q '\"name\": \"{d}\"' \"$FLEET_ROOT/etc/fleet/device.json\"; then\n"
        f"  echo 'camera pipeline did not start on {d}' >&2; exit 1\nfi\n" for d in devices)
    return "#!/bin/sh\n" + checks + "echo 'selftest ok'\n"


def build(lab: Lab, version: str = "1.1.0", fail_on: tuple[str, ...] = ()) -> Path:
    """The lab image recipe at `version`, its self-test failing on `fail_on`."""
    text = (lab.project.firmware / "lab-1.1.0.yaml").read_text()
    text = text.replace("version: 1.1.0", f"version: {version}")
    if fail_on:
        script = failing_selftest(*fail_on).replace("\n", "\\n").replace('"', '\\"')
        text = text.replace("generate:\n", f'generate:\n  opt/edgefleet/bin/selftest: "{script}"\n')
    recipe = lab.project.firmware / f"test-{version}-{len(fail_on)}.yaml"
    recipe.write_text(text)
    return firmware.build(lab.project, recipe, passphrase=SECRET.encode()).path


def rollout(lab: Lab, bundle: Path, policy: Policy, sinks=(), **selection):
    """`engine.start` as the CLI calls it, with extra event sinks for the test."""
    sel = inv.Selection.of("lab", **selection)
    nr = inv.select(lab.project, sel, num_workers=policy.concurrency)
    work = OtaWork.for_bundle(lab.project, bundle)
    return engine.start(lab.project, nr, work, policy, selection={"inventory": "lab"},
                        sinks=list(sinks))


def versions(lab: Lab) -> dict[str, str]:
    return {row["name"]: row["software"] for row in lab.status()}
