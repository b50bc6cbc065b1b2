"""Log export over a 30-device lab: `fleet logs export` vs a sequential `scp` loop.

Run: .venv/bin/python bench/logs_export.py [--devices 30] [--mb 20] [--link 10mbit]

Every lab device gets ~20 MB of realistic logs over the last 20 hours (agent,
runtime with per-frame timings and camera reconnects, two applications,
provisioning, syslog; rotated files included). Then, in the same run and over
the same sshd servers with the same pinned keys:

* `fleet logs export --since 24h`: parallel, redacted and compressed on the
  device, verified on arrival;
* a sequential loop of `scp -r` of each device's ``var/log/fleet`` and system
  logs (what an operator would script), raw.

Prints wall times and bytes moved, with the load average. Target (issue 19): at
most half the scp loop's wall time while moving at least 5x fewer bytes. With ``--link RATE`` each
of the 3 sites sits behind its own shaped uplink (`fleet lab up --link`) and
both sides cross it; target (issue 22, at 10mbit): at least 4x faster.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_link_option, fleet_cmd, link_label, load_now, timed  # noqa: E402

from fleet.lab import Lab  # noqa: E402
from fleet.project import Project  # noqa: E402
from fleet.transport import controller_key  # noqa: E402

HOURS = 20
APPS = ("people-counter", "ppe-detector")
CAMERAS = ("dock-north", "dock-south", "gate", "warehouse-floor")
FRAMES: dict[str, int] = {}  # per-camera frame counters, as a real runtime logs them


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def runtime_line(rng: random.Random, t: float) -> str:
    cam = rng.choice(CAMERAS)
    roll = rng.random()
    if roll < 0.002:
        return (f"{stamp(t)} WARNING runtime: camera {cam}: Failed to get SDP description: "
                "Connection to server failed: Connection timed out; "
                f"reconnect in {rng.randint(1, 30)}s")
    if roll < 0.01:
        return f"{stamp(t)} INFO runtime: camera {cam}: stream resumed, 1920x1080 H.264 @ 25 fps"
    FRAMES[cam] = FRAMES.get(cam, 0) + 1
    return (f"{stamp(t)} INFO runtime: {cam} frame {FRAMES[cam]} decode "
            f"{rng.uniform(2, 9):.2f} ms infer {rng.uniform(8, 30):.2f} ms "
            f"queue {rng.randint(0, 4)}")


def app_line(rng: random.Random, t: float, app: str) -> str:
    if rng.random() < 0.001:
        return (f"{stamp(t)} ERROR {app}: Traceback (most recent call last):\\n  File "
                f"\"/panorama/application.py\", line {rng.randint(40, 300)}, in process_streams\\n"
                f"ValueError: empty tensor for node model_node")
    n = rng.randint(0, 12)
    boxes = ",".join("[" + ",".join(f"{rng.random():.3f}" for _ in range(4)) + "]"
                     for _ in range(min(n, 3)))
    return (f"{stamp(t)} INFO {app}: stream {rng.choice(CAMERAS)} detections={n} "
            f"score_max={rng.uniform(0.3, 0.99):.3f} boxes={boxes} "
            f"AverageInferenceTime={rng.uniform(9, 28):.1f}ms")


def agent_line(rng: random.Random, t: float) -> str:
    cmd = rng.choice(("info", "health", "health", "checksum", "slots"))
    return (f"{stamp(t)} INFO agent: command {cmd} from controller ok in "
            f"{rng.randint(40, 900)} ms (disk {rng.uniform(20, 60):.1f}% "
            f"mem {rng.uniform(30, 70):.1f}%)")


def syslog_line(rng: random.Random, t: float) -> str:
    host = "jetson"
    msg = rng.choice((
        f"kernel: [{rng.uniform(1, 99999):.6f}] eth0: link up, 1000Mbps, full-duplex",
        "systemd[1]: Started fleet-runtime.service - edgefleet runtime "
        f"(pid {rng.randint(900, 9999)}).",
        f"NetworkManager[{rng.randint(500, 900)}]: <info>  [{t:.4f}] dhcp4 (eth1): "
        "state changed bound",
        f"CRON[{rng.randint(1000, 30000)}]: (root) CMD (run-parts /etc/cron.hourly)",
        f"nvargus-daemon[{rng.randint(300, 800)}]: GPU temp {rng.uniform(40, 75):.1f} C",
    ))
    return f"{stamp(t)} {host} {msg}"


def write_log(path: Path, make: object, size: int, start: float, end: float, seed: int) -> None:
    """About `size` bytes of lines with times spread evenly from `start` to `end`."""
    rng = random.Random(seed)
    sample = sum(len(make(rng, end)) + 1 for _ in range(200)) / 200  # type: ignore[operator]
    count = max(1, int(size / sample))
    step = (end - start) / count
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fh.writelines(make(rng, start + i * step) + "\n" for i in range(count))  # type: ignore[operator]
    os.utime(path, (end, end))


def write_device_logs(root: Path, mb: int, now: float) -> None:
    """One device's logs: rotated runtime and app logs, agent, provisioning, syslog."""
    logs, mib = root / "var/log/fleet", 1024 * 1024
    start = now - HOURS * 3600
    plan = [  # (file, generator, share of the total)
        ("runtime.log.2", runtime_line, 0.15), ("runtime.log.1", runtime_line, 0.15),
        ("runtime.log", runtime_line, 0.10),
        (f"apps/{APPS[0]}.log.1", lambda r, t: app_line(r, t, APPS[0]), 0.15),
        (f"apps/{APPS[0]}.log", lambda r, t: app_line(r, t, APPS[0]), 0.10),
        (f"apps/{APPS[1]}.log", lambda r, t: app_line(r, t, APPS[1]), 0.15),
        ("agent.log", agent_line, 0.08), ("provisioning.log", agent_line, 0.01),
    ]
    span = (now - start) / len(plan)
    for i, (name, make, share) in enumerate(plan):
        begin = start + i * span
        write_log(logs / name, make, int(mb * mib * share), begin, begin + span, i)
    write_log(root / "var/log/syslog", syslog_line, int(mb * mib * 0.11), start, now, 99)


def seed_lab(lab: Lab, mb: int) -> None:
    """Generate one device's logs and copy them to every device (a copy each, not links)."""
    names = sorted(lab.devices())
    template = lab.root(names[0])
    write_device_logs(template, mb, time.time() - 60)
    for name in names[1:]:
        for rel in ("var/log/fleet", "var/log/syslog"):
            src, dst = template / rel, lab.root(name) / rel
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True, copy_function=shutil.copy2)
            else:
                shutil.copy2(src, dst)


def scp_loop(lab: Lab, out: Path) -> int:
    """Copy every device's logs with scp, one device after another; returns bytes copied."""
    key = controller_key(lab.project)
    known = lab.project.known_hosts
    for name, dev in sorted(lab.devices().items()):
        dest = out / dev.site / name
        dest.mkdir(parents=True)
        root = lab.root(name)
        subprocess.run(
            ["scp", "-q", "-r", "-P", str(dev.port), "-i", str(key),
             "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
             "-o", "BatchMode=yes",
             f"root@{dev.host}:{root / 'var/log/fleet'}",
             f"root@{dev.host}:{root / 'var/log/syslog'}",
             str(dest)], check=True)
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def fleet_export(root: Path, out: Path) -> int:
    proc = subprocess.run(fleet_cmd(root, "logs", "export", "-i", "lab", "--since", "24h",
                                    "--out", str(out), "--json"), stdout=subprocess.PIPE)
    if proc.returncode != 0:
        try:
            errors = [f"{b['device']}: {b['error']}" for b in json.loads(proc.stdout)["bundles"]
                      if not b["ok"]]
        except (ValueError, KeyError):
            errors = [proc.stdout.decode(errors="replace")[-2000:]]
        raise SystemExit(f"fleet logs export failed ({proc.returncode}):\n" + "\n".join(errors))
    return sum(p.stat().st_size for p in out.rglob("*.tar.gz"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=30)
    parser.add_argument("--mb", type=int, default=20, help="MB of logs per device")
    add_link_option(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as tmp:
        root = Path(tmp)
        lab = Lab(Project.locate(root))
        lab.up(sites=3, per_site=max(1, args.devices // 3), link=args.link or None)
        try:
            seed_lab(lab, args.mb)
            run(root, lab, args.link)
        finally:
            lab.down()


def device_deflate() -> str:
    """What the lab's agents (this venv's fleet-agent) compress with: the figures depend on it."""
    from fleet_runtime.agent import logs as agent_logs

    try:
        import isal  # noqa: F401
    except ImportError:
        return f"zlib level {agent_logs.COMPRESS_LEVEL} (the isal wheel is not installed)"
    return f"ISA-L level {agent_logs.ISAL_LEVEL}"


def run(root: Path, lab: Lab, link: str = "") -> None:
    n = len(lab.devices())
    raw = sum(p.stat().st_size for name in lab.devices()
              for p in [*(lab.root(name) / "var/log/fleet").rglob("*"),
                        lab.root(name) / "var/log/syslog"]
              if p.is_file())
    sizes: dict[str, int] = {}
    load = load_now()
    t_fleet = timed(lambda: sizes.__setitem__("fleet", fleet_export(root, root / "out-fleet")))
    t_scp = timed(lambda: sizes.__setitem__("scp", scp_loop(lab, root / "out-scp")))
    mb = 1024 * 1024
    print(f"log export, {n} devices, {raw / mb:.0f} MB of logs in all ({raw / n / mb:.1f} MB each), "
          f"{link_label(link)}, load average {load:.1f} before, {load_now():.1f} after")
    print(f"  device compression: {device_deflate()}")
    print(f"  fleet logs export (parallel, redacted, gzip): {t_fleet:6.2f} s  "
          f"{sizes['fleet'] / mb:8.1f} MB moved")
    print(f"  sequential scp loop (raw):                    {t_scp:6.2f} s  "
          f"{sizes['scp'] / mb:8.1f} MB moved")
    print(f"  wall time ratio scp/fleet: {t_scp / t_fleet:.2f}x   "
          f"bytes ratio scp/fleet: {sizes['scp'] / sizes['fleet']:.1f}x")
    if link:
        ok = t_scp >= 4 * t_fleet
        print(f"  target over the link (>= 4x faster than scp, measured): "
              f"{'met' if ok else 'NOT met'}")
        return
    uplink = 10e6 / 8  # bytes/s of a 10 Mbit/s site uplink: where the bytes really cost
    print(f"  transfer alone over a 10 Mbit/s uplink: fleet {sizes['fleet'] / uplink:.0f} s, "
          f"scp {sizes['scp'] / uplink:.0f} s (computed; measure with --link 10mbit)")
    ok = t_fleet <= 0.5 * t_scp and sizes["scp"] >= 5 * sizes["fleet"]
    print(f"  fleet / scp time: {t_fleet / t_scp:.2f}x   "
          f"target (<= 0.5x the time, >= 5x fewer bytes): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
