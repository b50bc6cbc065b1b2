"""Provisioning archives for 1,000 devices vs an `openssl` command-line loop.

Run: .venv/bin/python bench/provision_bench.py [--devices 1000] [--openssl-devices 1000] [--cli]

In one run, in a throwaway project with a fresh ECDSA P-256 fleet CA:

* edgefleet: `fleet.provisioning.build_archives` end to end for N devices:
  device key + certificate, SSH host key, signed manifest, zip written 0600,
  host keys pinned in known_hosts, certificates indexed, devices recorded
  AWAITING_PROVISIONING in the registry;
* `--cli` adds `fleet provision all` for the same N devices through the CLI
  (inventory load, passphrase unlock, progress bar);
* openssl: the same device key material the way an operator scripts it, one
  key + CSR + signing per device (three `openssl` processes), with the same
  subject, clientAuth EKU and 825-day validity. It gets the CA key unencrypted
  (saving it a decryption per device) and builds no archive, pins nothing.

Prints archives/s for both and the ratio. Targets (issue 3): at least 10x the
openssl loop, and at least 200 archives/s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from fleet import pki
from fleet import provisioning as prov
from fleet.project import Project

PASSPHRASE = b"bench-passphrase"
EXT = (
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
    "extendedKeyUsage=clientAuth\nsubjectKeyIdentifier=hash\n"
)


def specs(n: int) -> list[prov.DeviceSpec]:
    return [
        prov.DeviceSpec(
            name=f"dev-{i:05d}",
            site=f"site{i // 100:02d}",
            hostname="10.20.0.1",
            port=20000 + i,
            serial=f"SN{i:08d}",
            hardware="jetson-orin",
            arch="aarch64",
        )
        for i in range(n)
    ]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_edgefleet(root: Path, n: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for n archives."""
    project = Project.locate(root)
    ca = pki.load_ca(project, PASSPHRASE)
    cpu, start = time.process_time(), time.perf_counter()
    report = prov.build_archives(project, ca, specs(n), prov.BuildSettings(root / "archives"))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert len(report.built) == n and not report.failed, report.failed
    prov.verify_file(project, report.built[-1].path)
    return elapsed, cpu


def write_inventory(root: Path, n: int) -> None:
    inv = root / "inventories/bench"
    inv.mkdir(parents=True)
    lines = []
    for s in specs(n):
        lines += [
            f"{s.name}:",
            f"  hostname: {s.hostname}",
            f"  port: {s.port}",
            f"  data: {{site: {s.site}, serial: {s.serial}, hardware: {s.hardware}, "
            f"arch: {s.arch}}}",
        ]
    (inv / "hosts.yaml").write_text("\n".join(lines) + "\n")


def run_cli(root: Path, n: int) -> float:
    write_inventory(root, n)
    argv = [
        str(Path(sys.executable).parent / "fleet"),
        "--project",
        str(root),
        "--no-color",
        "provision",
        "all",
        "-i",
        "bench",
        "--out",
        str(root / "cli-archives"),
        "--json",
    ]
    env = {**os.environ, "FLEET_CA_PASSPHRASE": PASSPHRASE.decode()}
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def run_openssl(root: Path, ca: pki.FleetCA, n: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the openssl processes) for n devices."""
    work = root / "openssl"
    work.mkdir()
    ca_key = work / "ca.key"
    ca_key.write_bytes(
        ca.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ca_key.chmod(0o600)
    (work / "ext.cnf").write_text(EXT)
    cpu, start = children_cpu(), time.perf_counter()
    for s in specs(n):
        key, csr, crt = (work / f"{s.name}.{ext}" for ext in ("key", "csr", "crt"))
        subj = f"/CN={s.name}/serialNumber={s.serial}/OU={s.site}/O=Bench"
        subprocess.run(
            [
                "openssl",
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                str(key),
            ],
            check=True,
        )
        subprocess.run(
            ["openssl", "req", "-new", "-key", str(key), "-subj", subj, "-out", str(csr)],
            check=True,
        )
        subprocess.run(
            [
                "openssl",
                "x509",
                "-req",
                "-in",
                str(csr),
                "-CA",
                str(ca.paths.cert),
                "-CAkey",
                str(ca_key),
                "-set_serial",
                str(int.from_bytes(os.urandom(8), "big")),
                "-days",
                "825",
                "-sha256",
                "-extfile",
                str(work / "ext.cnf"),
                "-out",
                str(crt),
            ],
            check=True,
            stderr=subprocess.DEVNULL,
        )
    return time.perf_counter() - start, children_cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--openssl-devices", type=int, default=1000)
    parser.add_argument("--cli", action="store_true", help="also time `fleet provision all`")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="provision-bench-") as tmp:
        root = Path(tmp)
        ca = pki.init_ca(Project.locate(root), org="Bench", passphrase=PASSPHRASE)
        ours = run_edgefleet(root, args.devices)
        cli = None
        if args.cli:
            cli_root = root / "cli"
            cli_root.mkdir()
            pki.init_ca(Project.locate(cli_root), org="Bench", passphrase=PASSPHRASE)
            cli = run_cli(cli_root, args.devices)
        theirs = run_openssl(root, ca, args.openssl_devices)
    report(args, ours, cli, theirs)


def report(
    args: argparse.Namespace,
    ours: tuple[float, float],
    cli: float | None,
    theirs: tuple[float, float],
) -> None:
    ours_rate, theirs_rate = args.devices / ours[0], args.openssl_devices / theirs[0]
    ratio = ours_rate / theirs_rate
    cpu_ratio = (theirs[1] / args.openssl_devices) / (ours[1] / args.devices)
    print(f"cores: {os.cpu_count()}   load average at the end: {os.getloadavg()[0]:.2f}")
    print(
        f"edgefleet build_archives    {args.devices:5d} archives {ours[0]:7.2f} s wall "
        f"{ours_rate:8.1f}/s   CPU {1000 * ours[1] / args.devices:6.2f} ms each"
    )
    if cli is not None:
        print(
            f"fleet provision all (CLI)   {args.devices:5d} archives {cli:7.2f} s wall "
            f"{args.devices / cli:8.1f}/s"
        )
    print(
        f"openssl loop (key+CSR+sign) {args.openssl_devices:5d} devices  {theirs[0]:7.2f} s wall "
        f"{theirs_rate:8.1f}/s   CPU {1000 * theirs[1] / args.openssl_devices:6.2f} ms each"
    )
    print(f"ratio (wall): {ratio:.1f}x   ratio (CPU per device): {cpu_ratio:.1f}x")
    print(
        f"targets: >= 10x openssl: {'PASS' if ratio >= 10 else 'FAIL'}; "
        f">= 200 archives/s: {'PASS' if ours_rate >= 200 else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
