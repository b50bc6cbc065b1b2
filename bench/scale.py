"""The scaling curve: health sweep, OTA rollout and log export at 10, 30, 100 and 200 lab devices.

Run: .venv/bin/python bench/scale.py [--sizes 10,30,100,200] [--mb 2] [--log-mb 1]
     [--ssh openssh|asyncssh] [--out docs/scale]

For each lab size, each operation runs once as an operator would run it (a fresh
`fleet` process): `fleet health -c 20`, `fleet ota rollout BUNDLE --batches
1,30%,100% --concurrency 10` (a signed bundle of --mb MB, the lab reboot included),
and `fleet logs export` (--log-mb MB of logs per device). For each run it records
the wall time, the controller's CPU seconds (the `fleet` process and everything it
waited for, from `os.wait4`) and its peak resident memory, and prints them per
device. The lab's SSH servers and agents are not the controller: they share this
machine's cores, so wall time rises with the lab's size here while CPU and memory
per device are the controller's own cost.

Writes ``scale.json``, ``scale.md`` (the table) and ``scale.png`` (three panels:
wall time, CPU per device, peak memory per device) into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fleet_cmd  # noqa: E402
from logs_export import seed_lab  # noqa: E402
from rollout_vs_ansible import SECRET, setup, stop_lab  # noqa: E402

from fleet.lab import Lab  # noqa: E402
from fleet.project import Project  # noqa: E402

OPERATIONS = ("health", "rollout", "logs export")
SITES = {10: 2, 30: 3, 100: 4, 200: 5}


def lab_up(project: Project, devices: int, ssh: str) -> Lab:
    """A fresh lab of `devices` at the factory version, started by a `fleet lab up` process
    (its SSH servers then belong to init, not to this long-lived process)."""
    lab = Lab(project)
    if lab.devices():
        stop_lab(lab)
        lab.destroy()
    sites = SITES.get(devices, max(1, devices // 40))
    subprocess.run(fleet_cmd(project.root, "lab", "up", "--sites", str(sites),
                             "--devices-per-site", str(devices // sites), "--ssh", ssh),
                   check=True, capture_output=True)
    return lab


def run_one(argv: list[str], ok: tuple[int, ...] = (0,)) -> dict[str, float]:
    """Wall seconds, CPU seconds (the process and what it waited for) and peak RSS (MiB)."""
    # Output to files, not pipes: nothing reads a pipe while wait4 waits (a full one hangs).
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        err.seek(0)
        stderr = err.read()
    code = os.waitstatus_to_exitcode(status)
    if code not in ok:
        raise SystemExit(f"{' '.join(argv[3:6])} failed ({code}):\n"
                         f"{stderr.decode(errors='replace')[-1500:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "rss_mb": usage.ru_maxrss / 1024}


def sweep_size(project: Project, bundle: Path, devices: int, ssh: str,
               log_mb: int) -> dict[str, dict[str, float]]:
    lab = lab_up(project, devices, ssh)
    root = project.root
    n = len(lab.devices())
    try:
        seed_lab(lab, log_mb)
        out = root / f"export-{n}"
        shutil.rmtree(out, ignore_errors=True)
        results = {
            # 1 = degraded (the shared host's load): still a completed sweep
            "health": run_one(fleet_cmd(root, "health", "-i", "lab", "--json", "-c", "20"),
                              ok=(0, 1)),
            "logs export": run_one(fleet_cmd(root, "logs", "export", "-i", "lab", "--since",
                                             "24h", "--out", str(out), "--json")),
            "rollout": run_one(fleet_cmd(root, "ota", "rollout", str(bundle), "-i", "lab",
                                         "--batches", "1,30%,100%", "--concurrency", "10",
                                         "--json")),
        }
    finally:
        stop_lab(lab)
    for figures in results.values():
        figures["devices"] = n
    return results


def table(rows: list[dict[str, object]]) -> str:
    lines = ["| devices | operation | wall | controller CPU / device | peak memory / device |"
             " load |", "|---|---|---|---|---|---|"]
    for r in rows:
        n = float(r["devices"])  # type: ignore[arg-type]
        lines.append(f"| {r['devices']} | {r['operation']} | {r['wall_s']:.1f} s | "
                     f"{float(r['cpu_s']) / n * 1000:.0f} ms | "  # type: ignore[arg-type]
                     f"{float(r['rss_mb']) / n:.2f} MiB | {r['load']:.1f} |")  # type: ignore[arg-type]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, object]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    panels = (("wall time (s)", lambda r: r["wall_s"]),
              ("controller CPU per device (ms)", lambda r: r["cpu_s"] / r["devices"] * 1000),
              ("peak controller memory per device (MiB)", lambda r: r["rss_mb"] / r["devices"]))
    for ax, (label, value) in zip(axes, panels, strict=True):
        for op in OPERATIONS:
            mine = [r for r in rows if r["operation"] == op]
            ax.plot([r["devices"] for r in mine], [value(r) for r in mine], marker="o", label=op)
        ax.set_xscale("log")
        ax.set_xticks(sorted({int(r["devices"]) for r in rows}))  # type: ignore[call-overload]
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("lab devices")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,30,100,200")
    parser.add_argument("--mb", type=int, default=2, help="bundle size for the rollout")
    parser.add_argument("--log-mb", type=int, default=1, help="MB of logs per device")
    parser.add_argument("--ssh", default="openssh", choices=("openssh", "asyncssh"))
    parser.add_argument("--out", type=Path, default=Path("docs/scale"))
    args = parser.parse_args()
    os.environ.setdefault("FLEET_RELEASE_PASSPHRASE", SECRET)
    project, bundle = setup(max(int(s) for s in args.sizes.split(",")), args.mb)
    rows: list[dict[str, object]] = []
    print(f"{'devices':>7}  {'operation':<12} {'wall':>8}  {'CPU/dev':>8}  {'MiB/dev':>8}  load",
          flush=True)
    for size in (int(s) for s in args.sizes.split(",")):
        for op, figures in sweep_size(project, bundle, size, args.ssh, args.log_mb).items():
            row = {"operation": op, **figures, "load": os.getloadavg()[0]}
            rows.append(row)
            n = figures["devices"]
            print(f"{int(n):>7}  {op:<12} {figures['wall_s']:>7.1f}s  "
                  f"{figures['cpu_s'] / n * 1000:>6.0f}ms  {figures['rss_mb'] / n:>8.2f}  "
                  f"{row['load']:.1f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out / "scale.md").write_text(table(rows))
    title = (f"edgefleet controller cost vs lab size ({args.ssh} lab servers on one 2-core "
             f"machine, load {min(float(r['load']) for r in rows):.0f}-"  # type: ignore[arg-type]
             f"{max(float(r['load']) for r in rows):.0f}; {time.strftime('%Y-%m-%d')})")
    plot(rows, args.out / "scale.png", title)
    print(f"wrote {args.out / 'scale.json'}, scale.md and scale.png")


if __name__ == "__main__":
    main()
