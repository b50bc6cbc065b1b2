"""Helpers shared by the benchmarks: a bench venv for peers (ansible-core), timing, tables."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
WORK = BENCH_DIR / ".work"


def peer_venv(*packages: str) -> Path:
    """A venv under bench/.work with the peer tools installed (created once)."""
    venv = WORK / "peers"
    marker = venv / ("installed-" + "-".join(p.replace("=", "_") for p in packages))
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin/pip"), "install", "-q", *packages], check=True)
        marker.touch()
    return venv / "bin"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def best_of(n: int, fn: Callable[[], object]) -> float:
    return min(timed(fn) for _ in range(n))


def add_link_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--link", default="", metavar="RATE",
                        help="run both sides over a lab whose sites sit behind shaped uplinks "
                             "of RATE each (`fleet lab up --link`, e.g. 10mbit; needs root)")


def link_label(link: str) -> str:
    return f"over {link} per-site links" if link else "on loopback"


def load_now() -> float:
    """The 1-minute load average: printed beside every ratio, since the lab shares the
    machine's cores with whatever else runs (figures are only comparable at like load)."""
    return os.getloadavg()[0]


def fleet_cmd(project: Path, *args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "fleet"), "--project", str(project), "--no-color", *args]


def ansible_inventory(project: Path, lab: object, out: Path,
                      host_vars: Callable[[str], str] | None = None) -> Path:
    """An INI inventory for the same lab, pinned to the same known_hosts (no TOFU);
    `host_vars(name)` adds ``key=value`` variables to a host's line."""
    from fleet.transport import controller_key

    key = controller_key(lab.project)  # type: ignore[attr-defined]
    known = project / ".fleet/known_hosts"
    lines = ["[lab]"]
    for name, dev in sorted(lab.devices().items()):  # type: ignore[attr-defined]
        extra = f" {host_vars(name)}" if host_vars else ""
        lines.append(f"{name} ansible_host={dev.host} ansible_port={dev.port}{extra}")
    lines += ["", "[lab:vars]", "ansible_user=root", f"ansible_ssh_private_key_file={key}",
              "ansible_python_interpreter=/usr/bin/python3",
              f"ansible_ssh_common_args='-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes'"]
    out.write_text("\n".join(lines) + "\n")
    return out
