"""Bulk camera registration: 10,000 cameras from one CSV into the embedded registry.

Run: .venv/bin/python bench/camera_import.py [--rows 10000] [--rounds 3]
Prints the best-of-N time for validate + encrypt + commit (in process, one
transaction), the same through the `fleet cameras import` CLI (process start
included), rows/s, and what Panorama's camera API quota (5 requests/s, one
call per camera) would have needed for the same cameras.
Target: 10,000 rows validated, encrypted and committed in under 1 s on 2 cores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fleet_cmd  # noqa: E402

from fleet.cameras import Limits, import_cameras  # noqa: E402
from fleet.project import Project  # noqa: E402
from fleet.registry import open_registry  # noqa: E402

PANORAMA_RPS = 5.0
PER_DEVICE = 80  # the default per-device camera limit


def write_csv(path: Path, rows: int, devices: int) -> None:
    lines = ["name,device,rtsp_url,username,password,description,tags"]
    for i in range(rows):
        dev = i % devices
        lines.append(
            f"cam-{i:05d},dev-{dev:04d},rtsp://10.{i // 65536}.{i // 256 % 256}.{i % 256}"
            f':554/Streaming/Channels/101,viewer,pw-{i:05d}-x7,"Camera {i}, aisle {i % 40}",'
            f"app=app{(i // devices) % 10};zone=z{i % 7}"
        )
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8-sig")


def fresh_project(root: Path, devices: int) -> Project:
    root.mkdir(parents=True)
    project = Project.locate(root)
    with open_registry(project) as registry, registry.transaction():  # type: ignore[attr-defined]
        for d in range(devices):
            registry._upsert(f"dev-{d:04d}", {"site": f"site-{d % 5}"})  # type: ignore[attr-defined]
    return project


def in_process(base: Path, csv: Path, devices: int, rounds: int) -> tuple[float, float]:
    """Best of `rounds`: (validate-only dry run, full import)."""
    dry, full = [], []
    for n in range(rounds):
        project = fresh_project(base / f"p{n}", devices)
        with open_registry(project) as registry:
            started = time.perf_counter()
            result = import_cameras(registry, csv, Limits(), dry_run=True)
            dry.append(time.perf_counter() - started)
            started = time.perf_counter()
            result = import_cameras(registry, csv, Limits())
            full.append(time.perf_counter() - started)
            assert result.ok and result.applied, result.errors[:3]
    return min(dry), min(full)


def via_cli(base: Path, csv: Path, devices: int) -> float:
    project = fresh_project(base / "cli", devices)
    started = time.perf_counter()
    subprocess.run(
        fleet_cmd(project.root, "cameras", "import", str(csv)),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    devices = -(-args.rows // PER_DEVICE)
    with tempfile.TemporaryDirectory(prefix="bench-cameras-") as tmp:
        base = Path(tmp)
        csv = base / "cameras.csv"
        write_csv(csv, args.rows, devices)
        dry, full = in_process(base, csv, devices, args.rounds)
        cli = via_cli(base, csv, devices)
    quota = args.rows / PANORAMA_RPS
    print(f"{args.rows} cameras on {devices} devices, CSV {csv.name} (BOM, CRLF, quoted fields)")
    print(f"  validate only (--dry-run)             {dry:7.3f} s  {args.rows / dry:9.0f} rows/s")
    print(
        f"  validate + encrypt + commit (1 tx)    {full:7.3f} s  {args.rows / full:9.0f} rows/s"
        f"   target < 1 s: {'met' if full < 1 else 'MISSED'}"
    )
    print(f"  `fleet cameras import` (process incl.) {cli:6.3f} s")
    print(
        f"  Panorama API quota, 5 requests/s      {quota:7.0f} s  ({quota / 60:.0f} min)"
        f"   -> {quota / full:,.0f}x slower"
    )


if __name__ == "__main__":
    main()
