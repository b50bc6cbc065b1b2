"""`fleet device package`: the .deb builds for amd64 and arm64, is lintian-clean, its units pass
`systemd-analyze verify`, and the amd64 one installs into a fresh Debian root (debootstrap,
`dpkg --root`), answers `fleet-agent info` there, upgrades over itself keeping state, purges.

Marked `servers` by tests/areas.py (the module runs subprocesses): the first run downloads
wheels and a Debian root (tests/fixtures_device.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fixtures_device import (
    REPO,
    agent_in_root,
    dpkg,
    extract,
    next_revision,
)
from labkit import run_cli

ELF_MACHINES = {0x3E: "x86-64", 0xB7: "aarch64", 0x03: "i386", 0x28: "arm"}


def _contents(deb: Path) -> list[str]:
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], check=True, capture_output=True,
                             text=True).stdout
    return [line.split()[5].removeprefix(".") for line in listing.splitlines()]


# ---------------------------------------------------------------- contents


def test_contents_put_the_commands_on_path_and_the_venv_under_opt(amd64_deb: Path) -> None:
    files = _contents(amd64_deb)
    for path in ("/usr/bin/fleet-agent", "/usr/bin/fleet-runtime",
                 "/opt/edgefleet/venv/pyvenv.cfg", "/opt/edgefleet/venv/bin/python3.11",
                 "/lib/systemd/system/fleet-agent-boot.service",
                 "/lib/systemd/system/fleet-agent.service",
                 "/lib/systemd/system/fleet-runtime@.service",
                 "/usr/lib/tmpfiles.d/edgefleet-runtime.conf",
                 "/usr/share/doc/edgefleet-runtime/copyright"):
        assert path in files, path
    # Configuration and state are made by postinst, never shipped: an upgrade cannot touch them.
    assert not [f for f in files if f.startswith(("/etc/fleet", "/var/lib/fleet"))]
    control = subprocess.run(["dpkg-deb", "-f", str(amd64_deb), "Depends", "Architecture"],
                             check=True, capture_output=True, text=True).stdout
    assert "python3.11" in control and "Architecture: amd64" in control


def _elf_machine(path: Path) -> str | None:
    with path.open("rb") as fh:
        head = fh.read(20)
    if head[:4] != b"\x7fELF":
        return None
    order = "little" if head[5] == 1 else "big"
    code = int.from_bytes(head[18:20], order)
    return ELF_MACHINES.get(code, hex(code))


def test_arm64_package_holds_only_aarch64_native_files(arm64_deb: Path,
                                                       tmp_path: Path) -> None:
    root = extract(arm64_deb, tmp_path / "arm64")
    native = {p: _elf_machine(p) for p in root.rglob("*") if p.is_file() and not p.is_symlink()}
    native = {p: m for p, m in native.items() if m is not None}
    assert native, "no native files: the test would prove nothing"
    wrong = {str(p.relative_to(root)): m for p, m in native.items() if m != "aarch64"}
    assert wrong == {}
    print(f"arm64: {len(native)} native files, all aarch64:")
    for path in sorted(native):
        print(f"  {path.relative_to(root)}")
    if shutil.which("file"):  # the same verdict from file(1), where it is installed
        some = sorted(native)[0]
        assert "aarch64" in subprocess.run(["file", "-b", str(some)], capture_output=True,
                                           text=True).stdout


def test_lintian_clean(amd64_deb: Path, arm64_deb: Path) -> None:
    if shutil.which("lintian") is None:
        pytest.skip("lintian is not installed (apt install lintian)")
    for deb in (amd64_deb, arm64_deb):
        proc = subprocess.run(["lintian", "--tag-display-limit", "0", str(deb)],
                              capture_output=True, text=True)
        tags = [line for line in proc.stdout.splitlines() if re.match(r"[EWI]: ", line)]
        assert proc.returncode == 0 and tags == [], proc.stdout + proc.stderr


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    for args, message in ((["--arch", "ppc64el"], "unknown architecture 'ppc64el'"),
                          (["--extras", "gpu"], "unknown extra 'gpu'"),
                          (["--python", "2.7"], "unsupported Python version '2.7'")):
        result = run_cli(REPO, "device", "package", *args, "--out", str(tmp_path))
        assert result.exit_code == 2 and result.stderr.startswith(f"error: {message}")
        assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- units


@pytest.fixture(scope="module")
def unit_root(amd64_deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's files over a copy of this machine's system units (the targets they name)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt install systemd)")
    root = tmp_path_factory.mktemp("unit-root")
    shutil.copytree("/lib/systemd/system", root / "lib/systemd/system", symlinks=True)
    return extract(amd64_deb, root)


def _analyze(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", f"--root={root}", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("unit", ["fleet-agent-boot.service", "fleet-agent.service",
                                  "fleet-runtime@people_counter.service"])
def test_every_unit_passes_systemd_analyze_verify(unit_root: Path, unit: str) -> None:
    proc = _analyze(unit_root, "verify", "--man=no", unit)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


def test_verify_would_catch_a_broken_unit(unit_root: Path, tmp_path: Path) -> None:
    """What the verify test above relies on: a typo or a missing program is reported."""
    root = tmp_path / "broken"
    shutil.copytree(unit_root, root, symlinks=True)
    unit = root / "lib/systemd/system/fleet-runtime@.service"
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    proc = _analyze(root, "verify", "--man=no", "fleet-runtime@x.service")
    assert "Unknown key 'ProtectSytem'" in proc.stderr


def _settings(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_runtime_unit_is_sandboxed(unit_root: Path) -> None:
    unit = _settings(unit_root / "lib/systemd/system/fleet-runtime@.service")
    assert unit["User"] == ["edgefleet"] and unit["NoNewPrivileges"] == ["yes"]
    assert unit["ProtectSystem"] == ["strict"] and unit["DevicePolicy"] == ["closed"]
    assert unit["CapabilityBoundingSet"] == [""] and unit["MemoryMax"][0].endswith("G")
    assert unit["Type"] == ["notify"] and int(unit["WatchdogSec"][0]) > 0
    assert unit["Restart"] == ["on-failure"]
    allowed = [v.split()[0] for v in unit["DeviceAllow"]]
    gpu_or_video = re.compile(r"char-(video4linux|drm|nvidia[-a-z]*)|/dev/nv(map|host-[-a-z0-9]+)")
    assert allowed and all(gpu_or_video.fullmatch(d) for d in allowed), allowed
    binds = [v.split(":")[1] for v in unit["BindPaths"] + unit["BindReadOnlyPaths"]]
    assert {"/panorama", "/opt/aws/panorama/logs"} <= set(binds)
    score = _analyze(unit_root, "security", "--offline=yes", "--no-pager",
                     "fleet-runtime@people_counter.service")
    overall = [line for line in score.stdout.splitlines() if "Overall exposure" in line]
    print(f"systemd-analyze security fleet-runtime@.service: {overall or score.stderr.strip()}")
    if overall:
        exposure = float(re.findall(r"(\d+\.\d+)", overall[0])[0])
        assert exposure <= 3.0, overall  # "OK" or better on systemd's 0 (safe) .. 10 scale


def test_boot_unit_runs_early_and_the_agent_restarts_with_a_limit(unit_root: Path) -> None:
    units = unit_root / "lib/systemd/system"
    boot = _settings(units / "fleet-agent-boot.service")
    assert boot["ExecStart"] == ["/usr/bin/fleet-agent boot"] and boot["Type"] == ["oneshot"]
    assert boot["DefaultDependencies"] == ["no"]
    assert {"network-pre.target", "sysinit.target"} <= set(boot["Before"][0].split())
    agent = _settings(units / "fleet-agent.service")
    assert agent["Restart"] == ["on-failure"] and int(agent["StartLimitBurst"][0]) > 0
    assert agent["ConditionPathExists"] == ["/etc/fleet/mqtt.json"]  # not before provisioning
    for name in ("fleet-agent.service", "fleet-runtime@.service"):
        unit = _settings(units / name)
        assert "fleet-agent-boot.service" in unit["After"][0].split()


# ---------------------------------------------------------------- a Debian root


def test_installs_upgrades_and_purges_in_a_debian_root(amd64_deb: Path, debian_root: Path,
                                                       tmp_path: Path) -> None:
    root = debian_root
    before = dpkg(root, "-i", str(amd64_deb))
    assert "Setting up edgefleet-runtime (0.1.0-1)" in before
    passwd = (root / "etc/passwd").read_text()
    assert re.search(r"^edgefleet:x:\d+:\d+:.*:/usr/sbin/nologin$", passwd, re.M)
    assert (root / "etc/systemd/system/sysinit.target.wants/fleet-agent-boot.service").is_symlink()
    assert agent_in_root(root, "info")["error"] == {  # type: ignore[comparison-overlap]
        "code": "not-provisioned", "message": "no device identity at /etc/fleet/device.json"}
    # Provisioned, with state: what an upgrade must keep.
    (root / "etc/fleet/device.json").write_text(json.dumps({"name": "deb-01", "site": "lab"}))
    (root / "var/lib/fleet/apps/marker").write_text("state\n")
    info = agent_in_root(root, "info")
    assert (info["ok"], info["name"], info["software"], info["slot"]) == (True, "deb-01", "0.1.0", "a")
    booted = agent_in_root(root, "boot")  # what fleet-agent-boot.service runs
    assert (booted["ok"], booted["event"], booted["slot"]) == (True, "boot", "a"), booted
    assert agent_in_root(root, "slots")["boots"] == 1

    dpkg(root, "-i", str(next_revision(amd64_deb, tmp_path / "rev2")))
    assert agent_in_root(root, "info")["name"] == "deb-01"
    assert (root / "var/lib/fleet/apps/marker").read_text() == "state\n"
    assert agent_in_root(root, "slots")["boots"] == 1  # boot.json kept, not reset to the factory's
    assert passwd.count("edgefleet:") == (root / "etc/passwd").read_text().count("edgefleet:")

    dpkg(root, "-r", "edgefleet-runtime")
    assert not (root / "usr/bin/fleet-agent").exists() and (root / "opt").is_dir()
    assert (root / "etc/fleet/device.json").exists()  # remove keeps identity and state

    dpkg(root, "-P", "edgefleet-runtime")
    for gone in ("etc/fleet", "var/lib/fleet", "var/log/fleet", "opt/edgefleet",
                 "etc/systemd/system/sysinit.target.wants/fleet-agent-boot.service"):
        assert not (root / gone).exists(), gone
    assert "edgefleet:" not in (root / "etc/passwd").read_text()
    assert "edgefleet:" not in (root / "etc/group").read_text()
    status = subprocess.run(["dpkg", f"--root={root}", "-s", "edgefleet-runtime"],
                            capture_output=True, text=True)
    assert status.returncode == 1  # not even config-files: dpkg forgot it
