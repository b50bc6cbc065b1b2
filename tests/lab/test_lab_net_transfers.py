"""Transfers over a slow shaped link (`fleet lab up --link`): what loopback never shows.

Two sites, one device each, behind 4 Mbit/s uplinks. An OTA upload killed part-way
(when the device holds a given byte count, not after a timer) resumes from the bytes
the device kept; a log export of both sites finishes within the time its byte count
predicts at that rate. Needs root with `ip` and `tc`; skipped otherwise, outside CI.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from labkit import CALM_HEALTH, HAVE_SSHD, run_cli

from fleet import firmware, processes
from fleet.lab import Lab
from fleet.lab import net as lab_net
from fleet.project import Project

REPO = Path(__file__).resolve().parents[2]
SECRET = "correct-horse-battery"
RATE, RATE_BPS = "4mbit", 4_000_000
PAYLOAD = 3 << 20  # ~6 s at 4 Mbit/s: long enough to cut at 1 MiB
CUT_AT = 1 << 20


@pytest.fixture(scope="module")
def slow_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    why = lab_net.missing_tools()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the link lab is required in CI: {why}")
        pytest.skip(why)
    root = tmp_path_factory.mktemp("slowlab")
    (root / "fleet.yaml").write_text(CALM_HEALTH)
    shutil.copytree(REPO / "firmware", root / "firmware")
    firmware.keygen(Project.locate(root), passphrase=SECRET.encode())
    lab = Lab(Project.locate(root))
    lab.up(2, 1, ssh="openssh" if HAVE_SSHD else "asyncssh", link=RATE)
    yield lab
    lab.down()


def _bundle(lab: Lab) -> Path:
    payload = lab.project.firmware / "lab-image/opt/edgefleet/models/big.bin"
    payload.write_bytes(os.urandom(PAYLOAD))  # incompressible: every byte crosses the link
    try:
        recipe = lab.project.firmware / "lab-1.1.0.yaml"
        edited = recipe.with_name("slow-1.1.1.yaml")
        edited.write_text(recipe.read_text().replace("version: 1.1.0", "version: 1.1.1"))
        return firmware.build(lab.project, edited, passphrase=SECRET.encode()).path
    finally:
        payload.unlink()


def _kept(lab: Lab, device: str) -> int:
    return sum(p.stat().st_size for p in lab.layout(device).staging.glob("*.part"))


def _wait_gone(what: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and what():  # type: ignore[operator]
        time.sleep(0.05)


def test_upload_killed_on_the_slow_link_resumes(slow_lab: Lab) -> None:
    bundle = _bundle(slow_lab)
    cmd = [str(Path(sys.executable).parent / "fleet"), "--project", str(slow_lab.project.root),
           "ota", "install", "berlin-01", str(bundle), "-i", "lab", "--json"]
    controller = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _kept(slow_lab, "berlin-01") < CUT_AT and controller.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    controller.kill()
    controller.wait()
    kept = _kept(slow_lab, "berlin-01")
    assert CUT_AT <= kept < bundle.stat().st_size, "the cut missed the upload"
    root = str(slow_lab.root("berlin-01"))
    _wait_gone(lambda: [p for p in processes.marked("FLEET_ROOT", root, ("-",))
                        if "install" in processes.cmdline(p)])  # the device saw the link go

    res = run_cli(slow_lab.project.root, "ota", "install", "berlin-01", str(bundle), "-i", "lab",
                  "--json")
    assert res.exit_code == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert report["after"] == "1.1.1"
    upload = next(s for s in report["steps"] if s["step"] == "upload")
    assert upload["detail"]["resumed_from"] >= CUT_AT
    # the rest really crossed the shaped link: never faster than it allows (plus its burst)
    assert upload["detail"]["MBps"] <= 1.5 * RATE_BPS / 8 / 1e6, upload


def _write_logs(root: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    logs = root / "var/log/fleet"
    logs.mkdir(parents=True, exist_ok=True)
    now = time.time()
    with (logs / "runtime.log").open("w") as fh:
        written, i = 0, 0
        while written < size:
            t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - 3600 + i * 0.01))
            line = (f"{t}Z INFO runtime: gate frame {i} decode {rng.uniform(2, 9):.2f} ms "
                    f"infer {rng.uniform(8, 30):.2f} ms queue {rng.randint(0, 4)}\n")
            fh.write(line)
            written, i = written + len(line), i + 1


def test_log_export_finishes_within_what_its_bytes_predict(slow_lab: Lab, tmp_path: Path) -> None:
    for seed, name in enumerate(sorted(slow_lab.devices())):
        _write_logs(slow_lab.root(name), 4 << 20, seed)
    started = time.monotonic()
    res = run_cli(slow_lab.project.root, "logs", "export", "-i", "lab", "--out",
                  str(tmp_path / "out"), "--json")
    elapsed = time.monotonic() - started
    assert res.exit_code == 0, res.stdout + res.stderr
    per_site = {site.name: sum(p.stat().st_size for p in site.glob("*.tar.gz"))
                for site in (tmp_path / "out").iterdir()}
    assert set(per_site) == {"berlin", "lisbon"} and all(per_site.values())
    # sites export in parallel, each over its own uplink: the slowest site bounds the wire time
    wire = max(per_site.values()) * 8 / RATE_BPS
    print(f"log export: {per_site} bytes in {elapsed:.1f} s; wire time at {RATE}: {wire:.1f} s")
    assert elapsed <= 4 * wire + 30, (elapsed, per_site)
