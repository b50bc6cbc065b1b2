"""Device packages and a Debian root for the tests of `fleet device ...` (a pytest plugin of
tests/conftest.py, so each is made once per session whichever modules use it).

The first run downloads the target wheels (into .fleet/cache/wheels of this checkout) and a
minimal Debian 12 with python3 (debootstrap, kept as .fleet/cache/debian-root/bookworm.tar);
later runs reuse both. `make clean` removes them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from labkit import run_cli

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".fleet/cache"
WHEELHOUSE = CACHE / "wheels"
DEBIAN_TAR = CACHE / "debian-root/bookworm.tar"


def build_deb(tmp: Path, arch: str) -> Path:
    result = run_cli(REPO, "device", "package", "--arch", arch, "--out", str(tmp / arch),
                     "--wheelhouse", str(WHEELHOUSE), "--json")
    assert result.exit_code == 0, result.stderr
    built = json.loads(result.stdout)
    print(f"{arch}: {built['size'] / 1e6:.1f} MB .deb, {built['installed_kib'] / 1024:.0f} MiB "
          f"installed, extras {built['extras']}, {len(built['wheels'])} distributions")
    return Path(built["path"])


def next_revision(deb: Path, tmp: Path) -> Path:
    """The same package as revision 2 (what `--revision 2` builds), repacked: a second
    build would cost a minute of CI for the same files."""
    tmp.mkdir()
    tree = tmp / "tree"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN/control"
    control.write_text(control.read_text().replace("Version: 0.1.0-1", "Version: 0.1.0-2"))
    out = tmp / deb.name.replace("0.1.0-1", "0.1.0-2")
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "-b", str(tree), str(out)],
                   check=True, capture_output=True)
    return out


def _need_dpkg_deb() -> None:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed (apt install dpkg)")


@pytest.fixture(scope="session")
def amd64_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _need_dpkg_deb()
    return build_deb(tmp_path_factory.mktemp("debs"), "amd64")


@pytest.fixture(scope="session")
def arm64_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _need_dpkg_deb()
    return build_deb(tmp_path_factory.mktemp("debs"), "arm64")


def extract(deb: Path, dest: Path) -> Path:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    return dest


@pytest.fixture(scope="session")
def debian_tar() -> Path:
    """A minimal Debian 12 with python3, made once with debootstrap and kept as a tar."""
    if os.geteuid() != 0:
        pytest.skip("dpkg --root and chroot need root")
    if DEBIAN_TAR.exists():
        return DEBIAN_TAR
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed (apt install debootstrap)")
    build = DEBIAN_TAR.with_suffix(".build")
    shutil.rmtree(build, ignore_errors=True)
    proc = subprocess.run(["debootstrap", "--variant=minbase", "--include=python3", "bookworm",
                           str(build), "http://deb.debian.org/debian"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    shutil.rmtree(build / "var/cache/apt/archives", ignore_errors=True)
    partial = DEBIAN_TAR.with_suffix(".part")
    subprocess.run(["tar", "-C", str(build), "--numeric-owner", "-cf", str(partial), "."],
                   check=True)
    partial.replace(DEBIAN_TAR)  # whole or absent: an interrupted run makes it again
    shutil.rmtree(build)
    return DEBIAN_TAR


@pytest.fixture
def debian_root(debian_tar: Path, tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "debian"
    root.mkdir()
    subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-xf", str(debian_tar)],
                   check=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def dpkg(root: Path, *args: str) -> str:
    proc = subprocess.run(["dpkg", f"--root={root}", *args], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


# A private mount namespace with the root's own /proc, then chroot: nothing leaks to the host.
IN_ROOT = 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"'
# What root's login shell has on Debian: /usr/local/sbin first (the tests' stand-ins go there).
ROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


def in_root(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run a command chrooted in `root` (its own /proc, in a private mount namespace), with
    root's environment there and nothing of ours."""
    return subprocess.run(["unshare", "--mount", "--fork", "sh", "-c", IN_ROOT, str(root), *argv],
                          capture_output=True, text=True, timeout=120, env=ROOT_ENV)


def agent_in_root(root: Path, *args: str) -> dict[str, object]:
    proc = in_root(root, "/usr/bin/fleet-agent", *args)
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr
    return dict(json.loads(lines[-1]))
