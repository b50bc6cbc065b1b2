"""Inventory scale: `fleet inventory list --json` on generated 10,000 and 100,000-device fleets.

Run: .venv/bin/python bench/inventory_scale.py [--sizes 10000,100000] [--rounds 5]
For each size it writes a YAML inventory (50 sites, tags, ports) and registers
the same devices in the project's registry, then runs the CLI as an operator
would (a fresh process each time) and prints the median of `--rounds` runs:

* yaml, cold: the first command after the files changed (libyaml parse,
  schema check, cache written);
* yaml: every later command (the parse cache is valid);
* registry: `-i registry`, no YAML at all;

with the CPU seconds of the process (user + system: what the wall time would
be on an idle core; on this shared machine the wall time follows the load),
its peak resident memory and, against a 10-device run, the memory each device
adds. Targets: 10,000 under 1 s, 100,000 under 5 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fleet_cmd  # noqa: E402


def write_inventory(root: Path, devices: int, sites: int = 50) -> Path:
    folder = root / "inventories" / "big"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(devices):
        s = i % sites
        canary = ", canary" if i % 50 == 0 else ""
        out.append(f"dev-{i:06d}:\n  hostname: 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}\n"
                   f"  port: {2200 + i % 100}\n  groups: [site-s{s:03d}]\n  data:\n"
                   f"    site: s{s:03d}\n    serial: EF{i:010d}\n"
                   f"    hardware: jetson-orin-nano\n    arch: aarch64\n"
                   f"    tags: [ring={i % 3}{canary}]\n")
    (folder / "hosts.yaml").write_text("".join(out))
    (folder / "groups.yaml").write_text("".join(
        f"site-s{s:03d}:\n  data:\n    site: s{s:03d}\n    timezone: UTC\n" for s in range(sites)))
    (folder / "defaults.yaml").write_text("username: root\nport: 22\n"
                                          "data:\n  agent: /usr/bin/fleet-agent\n")
    return folder


def register(root: Path) -> None:
    """The same devices in the registry, in one transaction through the public store API."""
    from fleet import inventory as inv
    from fleet.project import Project
    from fleet.registry import open_registry

    project = Project.locate(root)
    registry = open_registry(project)
    try:
        registry.register_from_inventory(inv.load(project, "big"))
    finally:
        registry.close()


def run(root: Path, *args: str) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and peak RSS (KiB) of one CLI run, output discarded."""
    with tempfile.TemporaryFile() as err:  # a file: nothing reads a pipe during wait4
        started = time.perf_counter()
        proc = subprocess.Popen(fleet_cmd(root, "inventory", "list", "--json", *args),
                                stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        err.seek(0)
        if status != 0:
            raise SystemExit(f"fleet inventory list {' '.join(args)} failed: "
                             f"{err.read().decode(errors='replace')[-400:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def bust_cache(root: Path) -> None:
    shutil.rmtree(root / ".fleet" / "cache", ignore_errors=True)


def measure(root: Path, devices: int, rounds: int) -> dict[str, tuple[float, float, int]]:
    write_inventory(root, devices)
    results: dict[str, tuple[float, float, int]] = {}
    cold = []
    for _ in range(max(1, rounds if devices <= 10_000 else 1)):
        bust_cache(root)
        cold.append(run(root, "-i", "big"))
    results["yaml, cold"] = _median(cold)
    results["yaml"] = _median([run(root, "-i", "big") for _ in range(rounds)])
    register(root)
    results["registry"] = _median([run(root, "-i", "registry") for _ in range(rounds)])
    return results


def _median(runs: list[tuple[float, float, int]]) -> tuple[float, float, int]:
    return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
            max(r[2] for r in runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="inv-scale-") as tmp:
        base = measure(Path(tmp) / "p10", 10, 3)
        print(f"load average {os.getloadavg()[0]:.1f} at start; median of {args.rounds} runs")
        print(f"{'devices':>8}  {'source':<11} {'wall':>7}  {'CPU':>7}  {'peak RSS':>9}  "
              f"{'KiB/device':>10}  load")
        for n in sizes:
            for source, (wall, cpu, rss) in measure(Path(tmp) / f"p{n}", n, args.rounds).items():
                per = (rss - base[source][2]) / n
                print(f"{n:>8}  {source:<11} {wall:>6.2f}s  {cpu:>6.2f}s  {rss / 1024:>7.0f}MB  "
                      f"{per:>10.1f}  {os.getloadavg()[0]:.1f}", flush=True)
        print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
