"""A lab reboot outlives the process that asked for it, and `lab down` stops every process
the lab started, even one whose PID never reached lab.json."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from labkit import start_lab

from fleet import processes
from fleet.lab import Lab
from fleet.project import Project


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = start_lab(tmp_path, 1, 2)
    yield lab
    lab.down()


def lab_processes(lab: Lab) -> list[int]:
    """Live processes whose command line names this lab's directory (its SSH servers)."""
    marker = str(lab.dir)
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
            and marker in processes.cmdline(int(p.name)) and processes.alive(int(p.name))]


def wait_until(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def fleet_lab_reboot(lab: Lab, name: str) -> list[str]:
    return [sys.executable, "-m", "fleet.cli.main", "--project", str(lab.project.root),
            "lab", "reboot", name]


# Who asks for the reboot: the CLI (the reboot is a process of its own) or the power button
# the lab's inventory names (the reboot is a fork of it).
ASKERS = {"fleet lab reboot": fleet_lab_reboot, "power button": Lab.power_cycle_argv}


def kill_reboot_midway(lab: Lab, name: str, asker: str = "fleet lab reboot") -> None:
    """The reboot asked for in its own process, SIGKILLed once the device's SSH server
    has gone down for the reboot (before the boot logic ran or the server came back)."""
    server = lab.device(name).pid
    proc = subprocess.Popen(ASKERS[asker](lab, name),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: server not in lab_processes(lab) or proc.poll() is not None,
                   "the reboot stops the SSH server")
        assert proc.poll() is None, "the reboot finished before it could be interrupted"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


@pytest.mark.parametrize("asker", ASKERS)
def test_a_device_comes_back_after_the_controller_dies_during_its_reboot(lab: Lab,
                                                                         asker: str) -> None:
    boots = json.loads(lab.layout("berlin-01").boot_json.read_text())["boots"]
    kill_reboot_midway(lab, "berlin-01", asker)
    wait_until(lambda: getattr(lab.device("berlin-01"), "rebooting", None) is None
               and lab.running(lab.device("berlin-01")), "the device is back")
    assert json.loads(lab.layout("berlin-01").boot_json.read_text())["boots"] == boots + 1
    assert lab.device("berlin-01").pid in lab_processes(lab)


@pytest.mark.parametrize("asker", ASKERS)
def test_lab_down_after_a_killed_reboot_leaves_no_ssh_server(lab: Lab, asker: str) -> None:
    kill_reboot_midway(lab, "berlin-02", asker)
    lab.down()  # maybe while the reboot is still starting the server again
    assert lab_processes(lab) == []
    time.sleep(0)  # nothing to wait for: a reboot still running would have been stopped too
    assert lab_processes(lab) == [] and lab.strays() == []


def test_the_power_button_reboots_in_a_fork_of_itself_not_a_new_interpreter(lab: Lab) -> None:
    """The process that records itself as rebooting the device runs the power button's
    own command line: a fork, which imports nothing again (one Python start per reboot
    fewer on the cores the lab shares, #19). Then the device is back and answers."""
    seen: set[str] = set()
    proc = subprocess.Popen(lab.power_cycle_argv("berlin-01"), stdout=subprocess.PIPE, text=True)

    def rebooter_seen() -> bool:
        pid = getattr(lab.device("berlin-01"), "rebooting", None)
        line = processes.cmdline(pid) if pid else ""
        if line:
            seen.add(line)
        return bool(seen) or proc.poll() is not None

    wait_until(rebooter_seen, "the reboot records its process")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and json.loads(out)["port"] == lab.device("berlin-01").port
    assert seen and all("--wait" in line for line in seen), seen


def test_lab_down_stops_a_server_whose_pid_was_never_recorded(lab: Lab) -> None:
    """The process that started sshd died before it wrote the PID to lab.json."""
    running = lab.device("berlin-01").pid
    assert running is not None and running in lab_processes(lab)
    lab.update("berlin-01", pid=None)
    (lab.dir / ".lab.json.k1ll3d.tmp").write_text(f'{{"pid": {running}}}')  # its last trace
    lab.down()
    assert lab_processes(lab) == []
    assert not list(lab.dir.glob(".lab.json.*.tmp"))


def test_the_power_button_the_inventory_names_says_why_in_one_line(tmp_path: Path) -> None:
    """`python -m fleet.lab.reboot --wait` (the lab's data.power_cycle) on a device the lab
    does not have: exit 1 and one line on stderr, which the controller reports."""
    argv = Lab(Project.locate(tmp_path)).power_cycle_argv("nosuch-01")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "no lab device named 'nosuch-01'; known: none (run `fleet lab up`)"]


def test_the_lab_reboot_imports_neither_paramiko_nor_cryptography() -> None:
    """Every reboot runs this module twice (the power button and the detached reboot) on
    the cores the lab shares with the tools the benches compare (#19): SSH and key
    generation are not part of a reboot."""
    probe = ("import json, sys\n"
             "import fleet.lab.reboot\n"
             "print(json.dumps([m for m in ('paramiko', 'cryptography', 'nornir', 'fleet.agent')"
             " if m in sys.modules]))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == []


def test_a_pin_is_left_alone_only_when_it_is_the_one_key_for_the_address(tmp_path: Path) -> None:
    from fleet.lab.devices import pinned_alone
    from fleet.transport import PENDING, pin_host_key

    known, key = tmp_path / "known_hosts", "ssh-ed25519 AAAAC3one lab@device"
    assert not pinned_alone(known, "127.0.0.1", 2201, key)  # no file yet
    pin_host_key(known, "127.0.0.1", 2201, key)
    assert pinned_alone(known, "127.0.0.1", 2201, key)
    assert not pinned_alone(known, "127.0.0.1", 2202, key)  # another port
    assert not pinned_alone(known, "127.0.0.1", 2201, "ssh-ed25519 AAAAC3two")  # a new key
    known.write_text(known.read_text() + f"[127.0.0.1]:2201 ssh-ed25519 AAAAC3two {PENDING}\n")
    assert not pinned_alone(known, "127.0.0.1", 2201, key)  # a second key: rewrite the pin
