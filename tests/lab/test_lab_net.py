"""`fleet lab up --link RATE`: sites behind shaped veth uplinks in their own namespaces.

Needs root with `ip` and `tc` (as `make test` runs); skipped otherwise, outside CI.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_mqtt import require_mosquitto
from labkit import CALM_HEALTH, HAVE_SSHD, run_cli

from fleet.lab import Lab
from fleet.lab import net as lab_net
from fleet.lab.mqtt import LabMqtt
from fleet.project import Project

WHY_NOT = lab_net.missing_tools()
SEED_ENV = "EDGEFLEET_CRASH_SEED"


def _require_link() -> None:
    if WHY_NOT:
        if os.environ.get("CI"):
            pytest.fail(f"the link lab is required in CI: {WHY_NOT}")
        pytest.skip(WHY_NOT)


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def link_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    _require_link()
    root = tmp_path_factory.mktemp("linklab")
    (root / "fleet.yaml").write_text(CALM_HEALTH)
    lab = Lab(Project.locate(root))
    res = run_cli(root, "lab", "up", "--sites", "2", "--devices-per-site", "1", "--link", "10mbit",
                  "--ssh", "openssh" if HAVE_SSHD else "asyncssh")
    assert res.exit_code == 0, res.stderr
    yield lab
    lab.down()


def test_health_over_the_link(link_lab: Lab) -> None:
    devices = link_lab.devices()
    assert {d.host for d in devices.values()} == {
        link_lab.devices()["berlin-01"].host, link_lab.devices()["lisbon-01"].host}
    for dev in devices.values():
        assert dev.host.startswith("198.1") and dev.netns
        assert dev.netns in _ip("netns", "list")
    res = run_cli(link_lab.project.root, "health", "-i", "lab", "--json")
    report = json.loads(res.stdout)
    assert res.exit_code == 0, res.stdout
    assert report["summary"]["healthy"] == 2


def test_a_reboot_keeps_the_port_the_inventory_names(link_lab: Lab) -> None:
    """The controller's loopback holding the same port number (another lab, any program)
    must not move a namespace device's server away from what the inventory says."""
    dev = link_lab.device("lisbon-01")
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):  # already held by someone: the same situation
            squatter.bind(("127.0.0.1", dev.port))
            squatter.listen()
        link_lab.reboot("lisbon-01")
    assert link_lab.device("lisbon-01").port == dev.port
    res = run_cli(link_lab.project.root, "health", "-i", "lab", "--limit", "lisbon-01", "--json")
    assert res.exit_code == 0, res.stdout


def test_status_names_rate_and_delay(link_lab: Lab) -> None:
    res = run_cli(link_lab.project.root, "lab", "status", "--json")
    link = json.loads(res.stdout)["link"]
    assert link["rate"] == "10mbit" and set(link["sites"]) == {"berlin", "lisbon"}
    assert ("netem" in link["describe"]) if link["netem"] else ("no sch_netem" in link["describe"])
    shown = run_cli(link_lab.project.root, "lab", "status")
    assert "link: 10mbit per site" in shown.stderr + shown.stdout


def test_each_end_is_shaped(link_lab: Lab) -> None:
    state = lab_net.LabNet(link_lab.dir).state()
    assert state is not None
    for site in state.sites.values():
        assert "tbf" in subprocess.run(["tc", "qdisc", "show", "dev", site.host_if],
                                       capture_output=True, text=True).stdout
        assert "tbf" in subprocess.run(["tc", "-n", site.ns, "qdisc", "show", "dev", site.site_if],
                                       capture_output=True, text=True).stdout


def test_down_removes_namespaces_links_and_qdiscs(tmp_path: Path) -> None:
    _require_link()
    lab = Lab(Project.locate(tmp_path))
    lab.up(1, 1, ssh="asyncssh", link="5mbit")
    made = lab_net.LabNet(lab.dir).leftovers()
    assert len(made) == 2  # namespace + controller-side veth (its peer lives in the namespace)
    lab.down()
    assert lab_net.LabNet(lab.dir).leftovers() == []
    prefix = lab_net.prefix_for(lab.dir)
    assert prefix not in _ip("netns", "list") and prefix not in _ip("link")


def _kill_point() -> int:
    """Where to kill `lab up --link`: after the k-th namespace or link exists (1-6 for three
    sites), or (7) once a device server runs. From EDGEFLEET_CRASH_SEED, printed."""
    raw = os.environ.get(SEED_ENV)
    seed = int(raw) if raw else random.SystemRandom().randrange(1, 2**32)
    print(f"\n{SEED_ENV}={seed}  (set it to replay this kill point)", flush=True)
    return random.Random(seed).randint(1, 7)


def test_lab_down_after_kill_9_of_up_leaves_nothing(tmp_path: Path) -> None:
    """`lab up --link` killed while it builds links or starts servers: `lab down` finds
    everything by name. The kill lands at a point seen from outside, not after a timer."""
    _require_link()
    point = _kill_point()
    lab = Lab(Project.locate(tmp_path))
    net = lab_net.LabNet(lab.dir)
    cmd = [str(Path(sys.executable).parent / "fleet"), "--project", str(tmp_path), "lab", "up",
           "--sites", "3", "--devices-per-site", "2", "--ssh", "asyncssh", "--link", "5mbit"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def reached() -> bool:
        return bool(lab.strays()) if point == 7 else len(net.leftovers()) >= point

    deadline = time.monotonic() + 120
    while not reached() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert net.leftovers(), "killed before it made anything: nothing tested"
    res = run_cli(tmp_path, "lab", "down")
    assert res.exit_code == 0, res.stderr
    assert net.leftovers() == []
    assert net.prefix not in _ip("netns", "list") and net.prefix not in _ip("link")
    assert lab.strays() == []


def test_bad_rate_is_one_line_and_changes_nothing(tmp_path: Path) -> None:
    res = run_cli(tmp_path, "lab", "up", "--link", "fast")
    assert res.exit_code == 2
    assert "--link 'fast' is not a rate" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / ".fleet/lab/lab.json").exists()


def test_heartbeats_cross_the_site_link_to_the_lab_broker(tmp_path: Path) -> None:
    """`lab up --link --mqtt`: each device's daemon runs in its site's namespace and
    reaches the lab broker at the controller's end of the site link."""
    _require_link()
    require_mosquitto()
    (tmp_path / "fleet.yaml").write_text(CALM_HEALTH)
    plain = ["lab", "up", "--sites", "2", "--devices-per-site", "1", "--mqtt", "--heartbeat", "0.5"]
    assert run_cli(tmp_path, *plain).exit_code == 0  # first on loopback: daemons must move
    res = run_cli(tmp_path, *plain, "--link", "10mbit")
    assert res.exit_code == 0, res.stderr
    try:
        mq, lab = LabMqtt(Project.locate(tmp_path)), Lab(Project.locate(tmp_path))
        for name, pid in mq.daemons().items():
            ns = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True,
                                text=True).stdout.strip()
            assert ns == lab.device(name).netns
        deadline = time.monotonic() + 60
        while True:
            health = run_cli(tmp_path, "health", "-i", "lab", "--source", "mqtt", "--json")
            if health.exit_code == 0 or time.monotonic() > deadline:
                break
        assert health.exit_code == 0, health.stdout
        assert json.loads(health.stdout)["summary"]["healthy"] == 2
    finally:
        assert run_cli(tmp_path, "lab", "down").exit_code == 0
    assert lab_net.LabNet(lab.dir).leftovers() == [] and lab.strays() == []


def test_without_tc_the_option_refuses_in_one_line(tmp_path: Path) -> None:
    """`tc` lives in /usr/sbin: a PATH without it is a machine without it, for the lab."""
    bindir = Path(sys.executable).parent
    if (Path("/usr/bin/tc").exists() or Path("/bin/tc").exists()) or os.geteuid() != 0:
        pytest.skip("needs root and tc outside /usr/bin to hide it")
    res = subprocess.run([str(bindir / "fleet"), "--project", str(tmp_path), "lab", "up",
                          "--link", "10mbit"], capture_output=True, text=True,
                         env={**os.environ, "PATH": f"{bindir}:/usr/bin:/bin"})
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        "error: --link needs tc (iproute2), not found on PATH; apt-get install iproute2 or "
        "drop --link"], res.stderr
    assert not (tmp_path / ".fleet/lab/lab.json").exists()
