"""Health sweep over a 50-device lab: `fleet health` at concurrency 1 and 20 vs `ansible -m ping`.

Run: .venv/bin/python bench/health_sweep.py [--devices 50]
Prints wall times (best of 3) and ratios. Target: concurrent sweep >= 2x faster than Ansible.
Ansible runs with forks=20 over the same sshd servers and the same pinned known_hosts.

Also the controller's own CPU seconds per device, self and children (each
tool runs as a child of this script; `resource.getrusage(RUSAGE_CHILDREN)`
counts it and everything it waited for: Ansible's forks and ssh clients,
fleet's process). The lab's sshd and agents are not children, so the figure
does not depend on how loaded the lab devices are. Target: fleet <= 0.2x.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ansible_inventory, best_of, fleet_cmd, peer_venv, timed  # noqa: E402

from fleet.lab import Lab  # noqa: E402
from fleet.project import Project  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ansible_bin = peer_venv("ansible-core")
    with tempfile.TemporaryDirectory(prefix="bench-health-") as tmp:
        root = Path(tmp)
        lab = Lab(Project.locate(root))
        lab.up(sites=5, per_site=args.devices // 5)
        try:
            run(root, lab, ansible_bin, args.rounds)
        finally:
            lab.down()


def run(root: Path, lab: Lab, ansible_bin: Path, rounds: int) -> None:
    n = len(lab.devices())

    def fleet(conc: int) -> None:
        proc = subprocess.run(fleet_cmd(root, "health", "-i", "lab", "--json", "-c", str(conc)),
                              stdout=subprocess.DEVNULL)
        if proc.returncode == 2:  # 1 = degraded (e.g. host load from the bench itself) is fine
            raise SystemExit("fleet health could not reach every device")

    inventory = ansible_inventory(root, lab, root / "ansible.ini")
    env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_FORKS": "20",
           "ANSIBLE_LOCALHOST_WARNING": "False", "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3"}

    def ansible() -> None:
        proc = subprocess.run([str(ansible_bin / "ansible"), "all", "-i", str(inventory), "-m", "ping",
                               "-f", "20", "-o"], env=env, capture_output=True, text=True)
        ok = proc.stdout.count("SUCCESS")
        if ok != n:
            raise SystemExit(f"ansible reached {ok}/{n} devices:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")

    load = os.getloadavg()[0]
    t1 = best_of(rounds, lambda: fleet(1))
    t20, cpu20 = _timed_cpu(rounds, lambda: fleet(20))
    ta, cpua = _timed_cpu(rounds, ansible)
    print(f"devices: {n} (OpenSSH sshd per device on loopback), best of {rounds}, "
          f"load average {load:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"fleet health  concurrency 1 : {t1:7.2f} s")
    print(f"fleet health  concurrency 20: {t20:7.2f} s   ({t1 / t20:.1f}x faster than sequential)")
    print(f"ansible -m ping  forks 20   : {ta:7.2f} s")
    print(f"ratio ansible / fleet(20)   : {ta / t20:.2f}x   (target >= 5.0x)")
    print(f"controller CPU per device   : fleet {cpu20 / n * 1000:6.1f} ms, "
          f"ansible {cpua / n * 1000:6.1f} ms (median of {rounds}, self + children)")
    print(f"ratio fleet / ansible CPU   : {cpu20 / cpua:.2f}x   (target <= 0.20x)")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed_cpu(rounds: int, fn: Callable[[], None]) -> tuple[float, float]:
    """Best wall time and median controller CPU seconds (children) over `rounds` runs."""
    walls, cpus = [], []
    for _ in range(rounds):
        cpu = _children_cpu()
        walls.append(timed(fn))
        cpus.append(_children_cpu() - cpu)
    return min(walls), statistics.median(cpus)


if __name__ == "__main__":
    main()
