"""OTA install benchmark against one lab device (real sshd, real agent, real lab reboot).

(a) upload throughput of a 200 MB bundle: our streamed put (OpenSSH with the
    pinned known_hosts into `fleet-agent receive`: resumable `.part`, SHA-256
    computed on the device as the bytes arrive and compared with ours, which
    `fleet firmware build` took as it wrote the bundle) against plain `scp` of
    the same file, both with the same cipher;
(b) the full safe install (check, stream into the install: signature, every
    file's SHA-256, write the inactive slot, activate; reboot; one call that
    checks version, boot, self-test and health, then commits)
    against a naive script: `scp` + `ssh tar -x` into the slot + the same power
    cycle, with no signature, no hashes, no health gate.

    .venv/bin/python bench/ota_install.py [--mb 200] [--runs 3] [--json] [--link 10mbit]

With ``--link RATE`` the device sits behind a shaped uplink (`fleet lab up
--link`) and every side crosses it (try ``--mb 20 --runs 1`` at 10mbit).

Targets (issue 19): (a) >= 0.9x scp's MB/s; (b) within 1.3x of the naive
script. Each run does every side back to back and prints the load beside its
ratios (the lab shares 2 cores with whatever else runs); the figures are
the medians of the runs' ratios. Printed beside: the put of a file the
controller never hashed, scp with OpenSSH's default cipher, and the SFTP put
(paramiko fallback, then a device re-hash).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / ".work" / "ota"
SECRET = b"bench-passphrase"
DEVICE = "berlin-01"


def setup(mb: int, link: str = ""):
    from fleet import firmware
    from fleet.lab import Lab
    from fleet.project import Project

    if WORK.exists():
        old = Project.locate(WORK)
        Lab(old).down()
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    shutil.copytree(REPO / "firmware", WORK / "firmware")
    project = Project.locate(WORK)
    firmware.keygen(project, passphrase=SECRET)
    model = WORK / "firmware/lab-image/opt/edgefleet/models/big-model.bin"
    with open(model, "wb") as fh:
        for _ in range(mb):
            fh.write(os.urandom(1 << 20))
    lab = Lab(project)
    lab.up(1, 1, link=link or None)
    recipe = WORK / "firmware/lab-1.1.0.yaml"
    built = firmware.build(project, recipe, passphrase=SECRET).path
    return project, lab, built


def cipher() -> str:
    """The cipher fleet's OpenSSH bulk copy negotiates first; the peers are given the same."""
    from fleet.openssh import BULK_CIPHERS

    return BULK_CIPHERS.split(",")[0]


def ssh_opts(project, port: int, with_cipher: str | None = None) -> list[str]:
    from fleet.transport import controller_key

    return ["-i", str(controller_key(project)), "-o", f"UserKnownHostsFile={project.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
            *([] if with_cipher == "default" else ["-c", with_cipher or cipher()])]


def time_scp(project, lab, src: Path, dest: str, with_cipher: str | None = None) -> float:
    dev = lab.device(DEVICE)
    started = time.perf_counter()
    subprocess.run(["scp", "-q", *ssh_opts(project, dev.port, with_cipher), "-P", str(dev.port),
                    str(src), f"root@{dev.host}:{dest}"], check=True)
    return time.perf_counter() - started


def time_put(project, src: Path, dest: str, device_check: bool = True,
             streamed: bool = False, unhashed: bool = False) -> float:
    """One upload from a fresh start of this process's hash memory: the bundle as `fleet
    firmware build` left it (its SHA-256 taken while it was written and kept on the file);
    `unhashed`: a file the controller never hashed (it is hashed on a thread as it goes)."""
    from fleet import digests
    from fleet import inventory as inv

    digests.forget_all()
    if unhashed:
        digests.forget(src)
    from fleet.agent import agent_for
    from fleet.transport import CONNECTION_NAME

    nr = inv.select(project, inv.Selection.of("lab", limit=DEVICE))
    seconds = []

    def task(task):
        session = task.host.get_connection(CONNECTION_NAME, task.nornir.config)
        agent = agent_for(task)
        started = time.perf_counter()
        expected = [None]

        def trust(_path: str) -> str:  # measures the transfer without the device re-hash
            from fleet_runtime.bundle import sha256_file
            expected[0] = expected[0] or sha256_file(src)
            return expected[0]

        session.put(src, dest, verify=agent.checksum if device_check else trust,
                    receive=agent.receive if streamed else None)
        seconds.append(time.perf_counter() - started)

    nr.run(task=task, raise_on_error=True)
    nr.close_connections()
    return seconds[0]


def naive_install(project, lab, src: Path) -> float:
    """What people script without an OTA system: copy, untar over the slot, restart (the
    same power cycle the safe install runs: the inventory's ``power_cycle`` command)."""
    lay = lab.layout(DEVICE)
    dev = lab.device(DEVICE)
    port = dev.port
    remote = str(lay.staging / "naive.tar")
    slot = str(lay.slot("b"))
    started = time.perf_counter()
    subprocess.run(["scp", "-q", *ssh_opts(project, port), "-P", str(port), str(src),
                    f"root@{dev.host}:{remote}"], check=True)
    subprocess.run(["ssh", *ssh_opts(project, port), "-p", str(port), f"root@{dev.host}",
                    f"mkdir -p {slot} && tar -xf {remote} -C {slot} && rm -f {remote}"], check=True)
    subprocess.run(lab.power_cycle_argv(DEVICE), check=True, capture_output=True)
    return time.perf_counter() - started


def safe_install(project, src: Path, transfer: str = "stream") -> tuple[float, dict]:
    from fleet import inventory as inv
    from fleet import ota
    from fleet.health import agent_flags

    nr = inv.select(project, inv.Selection.of("lab", limit=DEVICE))
    started = time.perf_counter()
    result = nr.run(task=ota.install_bundle, bundle_path=src, project=project,
                    health_flags=agent_flags(project), transfer=transfer)[DEVICE][0]
    seconds = time.perf_counter() - started
    nr.close_connections(on_failed=True)
    if result.failed:
        raise SystemExit(f"safe install failed: {result.result}")
    return seconds, {s["step"]: s["seconds"] for s in result.result["steps"]}


def reset_device(lab) -> None:
    from fleet_runtime import slots

    lay = lab.layout(DEVICE)
    slots.factory_reset_state(lay, "1.0.0")
    for name in ("b",):
        shutil.rmtree(lay.slot(name), ignore_errors=True)
        lay.slot(name).mkdir()
    for f in lay.staging.iterdir():
        f.unlink()


def one_run(project, lab, bundle_path: Path, run: int) -> dict:
    """Every side once, back to back, with the load at the start."""
    lay = lab.layout(DEVICE)
    row: dict = {"load": round(os.getloadavg()[0], 1)}
    row["scp_s"] = time_scp(project, lab, bundle_path, str(lay.staging / f"scp{run}.bin"))
    row["put_s"] = time_put(project, bundle_path, str(lay.staging / f"st{run}.bin"),
                            streamed=True)
    row["put_unhashed_s"] = time_put(project, bundle_path, str(lay.staging / f"su{run}.bin"),
                                     streamed=True, unhashed=True)
    row["scp_default_cipher_s"] = time_scp(project, lab, bundle_path,
                                           str(lay.staging / f"scpd{run}.bin"), "default")
    row["sftp_put_s"] = time_put(project, bundle_path, str(lay.staging / f"put{run}.bin"))
    reset_device(lab)
    row["naive_s"] = naive_install(project, lab, bundle_path)
    reset_device(lab)
    row["safe_s"], row["safe_steps_s"] = safe_install(project, bundle_path)
    reset_device(lab)
    row["upload_ratio"] = round(row["scp_s"] / row["put_s"], 2)
    row["install_ratio"] = round(row["safe_s"] / row["naive_s"], 2)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--link", default="", metavar="RATE",
                        help="the device behind a shaped uplink of RATE (e.g. 10mbit; needs root)")
    args = parser.parse_args()
    project, lab, bundle_path = setup(args.mb, args.link)
    size_mb = bundle_path.stat().st_size / 1e6
    try:
        rows = [one_run(project, lab, bundle_path, run) for run in range(args.runs)]
    finally:
        lab.down()

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    out = {
        "bundle_mb": round(size_mb, 1), "runs": args.runs, "link": args.link or "loopback",
        "cipher": cipher(),
        "upload": {"scp_MBps": round(size_mb / med("scp_s"), 1),
                   "streamed_put_MBps": round(size_mb / med("put_s"), 1),
                   "ratio_vs_scp": round(med("upload_ratio"), 2), "target": ">= 0.9",
                   "unhashed_ratio_vs_scp": round(statistics.median(
                       r["scp_s"] / r["put_unhashed_s"] for r in rows), 2),
                   "sftp_put_MBps": round(size_mb / med("sftp_put_s"), 1),
                   "scp_default_cipher_MBps": round(size_mb / med("scp_default_cipher_s"), 1)},
        "install": {"naive_s": round(med("naive_s"), 2), "safe_s": round(med("safe_s"), 2),
                    "ratio_vs_naive": round(med("install_ratio"), 2), "target": "<= 1.3",
                    "safe_steps_s": {k: round(statistics.median(r["safe_steps_s"][k]
                                                                for r in rows), 2)
                                     for k in rows[0]["safe_steps_s"]}},
        "runs_detail": rows,
        "load_avg_end": os.getloadavg(),
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    u, i = out["upload"], out["install"]
    print(f"bundle {out['bundle_mb']} MB, {args.runs} runs, link {out['link']}, cipher "
          f"{out['cipher']} on every side (2 shared cores: each row's load is printed)")
    print(" run  load |  scp s  put s   (a) put/scp |  naive s  safe s  (b) safe/naive")
    for n, r in enumerate(rows):
        print(f" {n:3d} {r['load']:5.1f} | {r['scp_s']:6.2f} {r['put_s']:6.2f}  {r['upload_ratio']:6.2f}x"
              f"     | {r['naive_s']:8.2f} {r['safe_s']:7.2f}  {r['install_ratio']:6.2f}x")
    print(f"(a) upload, median of runs: {u['ratio_vs_scp']:.2f}x scp (target >= 0.9x): streamed "
          f"put {u['streamed_put_MBps']:.1f} MB/s, scp {u['scp_MBps']:.1f} MB/s")
    print(f"    the same put of a file the controller never hashed (hashed as it goes): "
          f"{u['unhashed_ratio_vs_scp']:.2f}x scp")
    print(f"    scp with OpenSSH's default cipher {u['scp_default_cipher_MBps']:.1f} MB/s; SFTP put "
          f"(paramiko fallback, then the device re-hashes) {u['sftp_put_MBps']:.1f} MB/s")
    print(f"(b) install, median of runs: {i['ratio_vs_naive']:.2f}x naive (target <= 1.3x): "
          f"safe {i['safe_s']:.2f} s, naive {i['naive_s']:.2f} s")
    print("    safe steps: " + ", ".join(f"{k} {v:.2f}s" for k, v in i["safe_steps_s"].items()))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
