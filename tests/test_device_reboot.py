"""A real reboot, as far as a test can go: the packaged agent on a Debian root (chroot) runs
`systemctl reboot`, which is a stand-in on its PATH that records the call, lets the box go
down slowly as systemd would (SSH still answering meanwhile), then runs what
fleet-agent-boot.service runs (its ExecStart, read from the installed unit). The boot picks
the same slot as the lab's boot does on a twin of the device; the controller's reboot
(fleet.ota.AgentRestarter) waits over SSH until the agent reports the new boot.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from fixtures_bundle import HARDWARE, default_files, make_bundle, new_key, trust
from fixtures_device import (
    IN_ROOT,
    ROOT_ENV,
    agent_in_root,
    dpkg,
)
from fleet_runtime.layout import Layout, atomic_write_json, read_json
from labkit import start_lab

from fleet import inventory as inv
from fleet.lab.devices import run_boot
from fleet.reboot import AgentRestarter

# What a box does between `systemctl reboot` and its next boot, in the chroot. The boot step
# is the installed unit's own ExecStart line, with the unit's environment.
STAND_IN = """#!/bin/sh
echo "$*" >> /var/log/systemctl-calls
[ "$1" = reboot ] || exit 0
sleep "$(cat /etc/shutdown-seconds)"
rm -rf /run/fleet
unit=/lib/systemd/system/fleet-agent-boot.service
env $(sed -n 's/^Environment=//p' $unit) $(sed -n 's/^ExecStart=//p' $unit) > /var/log/boot-answer 2>&1
echo done >> /var/log/boot-answer
exit 0
"""


def _box(root: Path, deb: Path, shutdown_s: float) -> Layout:
    """The package installed and provisioned, a bundle activated for a trial boot, and the
    stand-in systemctl first on the chroot's PATH (/usr/local/sbin)."""
    dpkg(root, "-i", str(deb))
    box = Layout(root)
    atomic_write_json(box.device_json, {"name": "box-01", "serial": "S1", "site": "field",
                                        "hardware": HARDWARE, "arch": "aarch64"})
    key = new_key()
    trust(box, key)
    (root / "var/lib/fleet/staging/next.bundle").write_bytes(
        make_bundle(key, default_files("1.1.0"), version="1.1.0", min_version="0.1.0"))
    installed = agent_in_root(root, "install", "/var/lib/fleet/staging/next.bundle", "--activate")
    assert installed["ok"], installed
    standin = root / "usr/local/sbin/systemctl"
    standin.write_text(STAND_IN)
    standin.chmod(0o755)
    (root / "etc/shutdown-seconds").write_text(f"{shutdown_s}\n")
    return box


def _twin(box: Layout, where: Path) -> Layout:
    """The same device state as a lab root (FLEET_ROOT), for the lab's boot."""
    twin = Layout(where)
    for part in ("etc/fleet", "var/lib/fleet"):
        shutil.copytree(box.root / part, where / part, symlinks=True)
    return twin


def _wait_for(path: Path, text: str, timeout_s: float = 120.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return path.read_text()
        time.sleep(0.2)
    raise AssertionError(f"{path} never said {text!r}")


def test_agent_reboot_calls_systemctl_and_the_boot_unit_boots_like_the_lab(
        amd64_deb: Path, debian_root: Path, tmp_path: Path) -> None:
    box = _box(debian_root, amd64_deb, shutdown_s=0)
    twin = _twin(box, tmp_path / "twin")
    lab_boot = run_boot(twin, {"FLEET_ROOT": str(twin.root), "PATH": "/usr/bin:/bin"})

    answer = agent_in_root(box.root, "reboot")
    assert answer["ok"] and answer["rebooting"] is True
    out = _wait_for(box.root / "var/log/boot-answer", "done")
    assert (box.root / "var/log/systemctl-calls").read_text() == "reboot\n"
    unit_boot = json.loads(out.splitlines()[0])
    same = ("event", "slot", "version", "state", "trials_left")
    assert {k: unit_boot[k] for k in same} == {k: lab_boot[k] for k in same}
    assert (unit_boot["event"], unit_boot["slot"], unit_boot["version"]) == ("boot-trial", "b", "1.1.0")
    unit_state, lab_state = read_json(box.boot_json), read_json(twin.boot_json)
    for state in (unit_state, lab_state):
        state.pop("updated_at")  # the clock of each boot
    assert unit_state == lab_state  # the same state, field for field


def _inventory(project_root: Path, port: int, agent: Path) -> None:
    """A second inventory whose one box is reached through the lab device's sshd, with an
    agent that runs chrooted in the Debian root: a device that is not a lab device."""
    folder = project_root / "inventories/field"
    folder.mkdir(parents=True)
    (folder / "hosts.yaml").write_text(
        f"box-01:\n  hostname: 127.0.0.1\n  port: {port}\n  groups: [site-field]\n"
        f"  data: {{site: field, hardware: {HARDWARE}, arch: aarch64, agent: {agent}}}\n")
    (folder / "groups.yaml").write_text("site-field:\n  data: {site: field}\n")
    (folder / "defaults.yaml").write_text("username: root\n")


def test_controller_waits_for_the_boot_report_not_just_ssh(
        amd64_deb: Path, debian_root: Path, tmp_path: Path) -> None:
    """The box keeps answering over SSH for a while after `reboot` (services stopping): the
    controller must not take that answer for the box being back."""
    box = _box(debian_root, amd64_deb, shutdown_s=3)
    agent = tmp_path / "box-agent"
    # Not the lab sshd's environment (FLEET_ROOT of its own device): this box's root's.
    agent.write_text(f"#!/bin/sh\nexec env -i PATH={ROOT_ENV['PATH']} unshare --mount --fork "
                     f"sh -c '{IN_ROOT}' {box.root} "
                     '/usr/bin/fleet-agent "$@"\n')
    agent.chmod(0o755)
    project = tmp_path / "project"
    project.mkdir()
    lab = start_lab(project, 1, 1)
    try:
        port = next(iter(lab.devices().values())).port
        _inventory(project, port, agent)
        nr = inv.select(lab.project, inv.Selection.of("field"))
        before = read_json(box.boot_json)["boots"]
        try:
            result = nr.run(task=lambda task: AgentRestarter(timeout_s=120, poll_s=0.5)
                            .reboot(task))
        finally:
            nr.close_connections(on_failed=True)
        assert not result.failed, result["box-01"][0].exception
        # Back means booted: the boot unit ran before reboot() returned.
        assert read_json(box.boot_json)["boots"] == before + 1
        assert "done" in (box.root / "var/log/boot-answer").read_text()
    finally:
        lab.down()

