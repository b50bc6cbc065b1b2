"""The device side as a Debian package: ``edgefleet-runtime_<version>_<arch>.deb``.

The package carries the ``edgefleet-runtime`` distribution in a self-contained
virtualenv under ``/opt/edgefleet/venv``, made here at build time for the
target architecture: wheels for that architecture are collected with
``pip download --platform ... --only-binary=:all:`` into a wheelhouse (kept
between builds, so a second build needs no network), then unpacked into the
venv's site-packages with ``pip install --target`` for the same platform. No
code of the target architecture runs while building, so an amd64 machine
builds the arm64 package; nothing is downloaded at install time. The venv's
interpreter is the distribution's ``python3.X`` (a dependency of the package),
which is why the wheels are chosen for one Python version (``--python``).

Static files (units, maintainer scripts, tmpfiles, lintian overrides) live in
``fleet/device_files/``.

>>> built = build(PackageSettings(arch="arm64", out_dir=Path("dist")))  # doctest: +SKIP
>>> built.path.name                                                       # doctest: +SKIP
'edgefleet-runtime_0.1.0-1_arm64.deb'
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from fleet.errors import ConfigError, FleetError, UsageError

PACKAGE = "edgefleet-runtime"
ARCHES = {"amd64": "x86_64", "arm64": "aarch64"}  # Debian name -> wheel platform machine
EXTRAS = ("mqtt", "vision")
DEFAULT_EXTRAS = ("mqtt",)
DEFAULT_PYTHON = "3.11"  # Debian 12; Ubuntu 22.04 (JetPack 6) wants --python 3.10
# glibc versions a wheel may require: up to Ubuntu 22.04's 2.35 (Debian 12 has 2.36).
GLIBC_MINORS = (35, 34, 31, 28, 27, 26, 24, 17)
PREFIX = "/opt/edgefleet"
VENV = f"{PREFIX}/venv"
FILES = Path(__file__).parent / "device_files"
UNITS = ("fleet-agent-boot.service", "fleet-agent.service", "fleet-runtime@.service")
COMMANDS = {"fleet-agent": "fleet_runtime.agent.cli", "fleet-runtime": "fleet_runtime.runtime_cli"}


class PackageError(FleetError):
    """A build step failed (pip, dpkg-deb); the message says which and why."""


@dataclass(frozen=True)
class PackageSettings:
    arch: str = "amd64"
    out_dir: Path = Path("dist")
    wheelhouse: Path = Path(".fleet/cache/wheels")
    extras: tuple[str, ...] = DEFAULT_EXTRAS
    python: str = DEFAULT_PYTHON
    revision: int = 1
    maintainer: str = "edgefleet maintainers <fleet@edgefleet.example.com>"

    def check(self) -> None:
        if self.arch not in ARCHES:
            raise UsageError(f"unknown architecture '{self.arch}'",
                             fix=f"use one of: {', '.join(ARCHES)}")
        unknown = sorted(set(self.extras) - set(EXTRAS))
        if unknown:
            raise UsageError(f"unknown extra '{unknown[0]}'", fix=f"use some of: {', '.join(EXTRAS)}")
        if not re.fullmatch(r"3\.1[0-9]", self.python):
            raise UsageError(f"unsupported Python version '{self.python}'",
                             fix="give the target's python3 version, 3.10 or later (e.g. 3.11)")
        if self.revision < 1:
            raise UsageError("--revision must be 1 or more")

    @property
    def cp(self) -> str:
        return "cp" + self.python.replace(".", "")

    @property
    def cache(self) -> Path:
        """This target's own wheelhouse (wheels of one architecture and Python version)."""
        return self.wheelhouse / f"{self.arch}-{self.cp}"


@dataclass
class BuiltPackage:
    path: Path
    arch: str
    version: str
    extras: tuple[str, ...]
    size: int  # bytes of the .deb
    installed_kib: int
    wheels: list[str] = field(default_factory=list)
    downloaded: bool = False  # False: every wheel came from the wheelhouse


# ---------------------------------------------------------------- sources


def runtime_source() -> Path:
    """The edgefleet-runtime source tree (runtime/ beside the fleet package)."""
    import fleet_runtime

    src = Path(fleet_runtime.__file__).resolve().parents[1]
    if not (src / "pyproject.toml").is_file():
        raise ConfigError("the edgefleet-runtime sources are not here",
                          where=str(src), fix="build the package from an edgefleet checkout")
    return src


def runtime_version() -> str:
    from fleet_runtime import __version__

    return __version__


def _pip(args: list[str], what: str) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
        raise PackageError(f"{what} failed: {' / '.join(tail)}")


def build_runtime_wheel(dest: Path) -> Path:
    _pip(["wheel", "--quiet", "--no-deps", "--wheel-dir", str(dest),
          str(runtime_source())], "building the edgefleet-runtime wheel")
    return next(dest.glob("edgefleet_runtime-*.whl"))


def _target_flags(settings: PackageSettings) -> list[str]:
    machine = ARCHES[settings.arch]
    platforms = [f"manylinux_2_{n}_{machine}" for n in GLIBC_MINORS] + [f"manylinux2014_{machine}"]
    flags = ["--only-binary=:all:", "--python-version", settings.python,
             "--implementation", "cp", "--abi", settings.cp, "--abi", "abi3", "--abi", "none"]
    for platform in platforms:
        flags += ["--platform", platform]
    return flags


def _requirement(wheel: Path, settings: PackageSettings) -> str:
    return f"{wheel}[{','.join(settings.extras)}]" if settings.extras else str(wheel)


def collect_wheels(wheel: Path, settings: PackageSettings) -> bool:
    """Fill this target's wheelhouse; True when something had to be downloaded."""
    cache = settings.cache
    cache.mkdir(parents=True, exist_ok=True)
    common = ["download", "--quiet", "--dest", str(cache), "--find-links", str(cache),
              *_target_flags(settings), _requirement(wheel, settings)]
    try:
        _pip([*common[:1], "--no-index", *common[1:]], "reading the wheelhouse")
        downloaded = False
    except PackageError:
        _pip(common, f"downloading {settings.arch} wheels for Python {settings.python}")
        downloaded = True
    for stale in cache.glob("edgefleet_runtime-*.whl"):  # built afresh every time
        stale.unlink()
    return downloaded


# ---------------------------------------------------------------- the tree


def install_venv(tree: Path, wheel: Path, settings: PackageSettings) -> list[str]:
    """A venv for the target's /usr/bin/python3.X, its site-packages unpacked from wheels."""
    venv = tree / VENV.lstrip("/")
    site = venv / "lib" / f"python{settings.python}" / "site-packages"
    _pip(["install", "--quiet", "--no-index", "--find-links", str(settings.cache),
          "--target", str(site), "--no-compile", "--no-warn-script-location",
          *_target_flags(settings), _requirement(wheel, settings)],
         "unpacking the wheels into the venv")
    shutil.rmtree(site / "bin", ignore_errors=True)  # scripts with this machine's shebang
    (venv / "bin").mkdir(parents=True)
    interpreter = f"python{settings.python}"
    (venv / "bin" / interpreter).symlink_to(f"/usr/bin/{interpreter}")
    (venv / "bin/python3").symlink_to(interpreter)
    (venv / "bin/python").symlink_to(interpreter)
    (venv / "lib64").symlink_to("lib")
    (venv / "pyvenv.cfg").write_text(
        f"home = /usr/bin\ninclude-system-site-packages = false\nversion = {settings.python}\n")
    for command, module in COMMANDS.items():
        script = venv / "bin" / command
        script.write_text(f"#!{VENV}/bin/{interpreter}\nimport sys\n"
                          f"from {module} import main\nsys.exit(main())\n")
        script.chmod(0o755)
    return sorted(d.name.removesuffix(".dist-info") for d in site.glob("*.dist-info"))


def _copy(src: Path, dest: Path, mode: int = 0o644) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    dest.chmod(mode)


def install_files(tree: Path, settings: PackageSettings, version: str) -> None:
    (tree / PREFIX.lstrip("/") / "VERSION").write_text(runtime_version() + "\n")
    usr_bin = tree / "usr/bin"
    usr_bin.mkdir(parents=True)
    for command in COMMANDS:
        (usr_bin / command).symlink_to(f"{VENV}/bin/{command}")  # policy: absolute
        _gzip((FILES / "man" / f"{command}.1").read_bytes(),
              tree / "usr/share/man/man1" / f"{command}.1.gz")
    for unit in UNITS:
        _copy(FILES / "systemd" / unit, tree / "lib/systemd/system" / unit)
    deb = FILES / "debian"
    _copy(deb / "tmpfiles.conf", tree / f"usr/lib/tmpfiles.d/{PACKAGE}.conf")
    doc = tree / f"usr/share/doc/{PACKAGE}"
    _copy(deb / "copyright", doc / "copyright")
    _copy(deb / "README.Debian", doc / "README.Debian")
    _changelog(doc / "changelog.Debian.gz", version, settings)
    _copy(deb / "lintian-overrides", tree / f"usr/share/lintian/overrides/{PACKAGE}")
    control = tree / "DEBIAN"
    for script in ("postinst", "prerm", "postrm"):
        _copy(deb / script, control / script, 0o755)


def _gzip(data: bytes, path: Path) -> None:
    """gzip -9n: no name or time inside, so two builds of the same files are the same bytes."""
    import gzip

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile("", "wb", 9, raw, mtime=0) as fh:
        fh.write(data)


def _changelog(path: Path, version: str, settings: PackageSettings) -> None:
    text = (f"{PACKAGE} ({version}) unstable; urgency=medium\n\n"
            f"  * Built by `fleet device package`.\n\n"
            f" -- {settings.maintainer}  Thu, 01 Jan 2026 00:00:00 +0000\n")
    _gzip(text.encode(), path)


def _installed_kib(tree: Path) -> int:
    total = sum(p.lstat().st_size for p in tree.rglob("*") if "DEBIAN" not in p.parts)
    return max(1, total // 1024)


def glibc_needed(tree: Path) -> str:
    """The highest manylinux glibc any bundled wheel asked for (``2.17`` when none did)."""
    found = [(2, 17)]
    for wheel_file in tree.rglob("*.dist-info/WHEEL"):
        for tag in re.findall(r"manylinux_(\d+)_(\d+)_", wheel_file.read_text()):
            found.append((int(tag[0]), int(tag[1])))
    # A wheel carries several tags; the lowest of its own is what it needs, but taking the
    # highest over all keeps the dependency safe at the cost of a stricter floor.
    major, minor = max(found)
    return f"{major}.{minor}"


def write_control(tree: Path, settings: PackageSettings, version: str) -> None:
    depends = [f"python{settings.python}", f"libc6 (>= {glibc_needed(tree)})", "passwd"]
    extras = ", ".join(settings.extras) or "none"
    control = (
        f"Package: {PACKAGE}\nVersion: {version}\nArchitecture: {settings.arch}\n"
        f"Maintainer: {settings.maintainer}\nInstalled-Size: {_installed_kib(tree)}\n"
        f"Depends: {', '.join(depends)}\nSection: admin\nPriority: optional\n"
        f"Description: edgefleet device side: fleet-agent and fleet-runtime\n"
        f" The edgefleet agent (A/B slots, provisioning, health, heartbeats and jobs)\n"
        f" and the vision runtime, in a self-contained virtualenv in {PREFIX}\n"
        f" (extras: {extras}), with systemd units for the boot-time slot choice, the\n"
        f" agent daemon and one runtime per application.\n"
    )
    (tree / "DEBIAN/control").write_text(control)


# ---------------------------------------------------------------- build


def build(settings: PackageSettings) -> BuiltPackage:
    """Build the .deb into ``settings.out_dir``; the wheelhouse is filled on first use."""
    settings.check()
    if shutil.which("dpkg-deb") is None:
        raise ConfigError("dpkg-deb is not installed", fix="apt install dpkg")
    version = f"{runtime_version()}-{settings.revision}"
    with tempfile.TemporaryDirectory(prefix="fleet-deb-") as tmp:
        wheel = build_runtime_wheel(Path(tmp) / "wheel")
        downloaded = collect_wheels(wheel, settings)
        tree = Path(tmp) / "root"
        wheels = install_venv(tree, wheel, settings)
        install_files(tree, settings, version)
        write_control(tree, settings, version)
        settings.out_dir.mkdir(parents=True, exist_ok=True)
        path = settings.out_dir / f"{PACKAGE}_{version}_{settings.arch}.deb"
        proc = subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(tree),
                               str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise PackageError(f"dpkg-deb failed: {proc.stderr.strip()}")
        installed = _installed_kib(tree)
    return BuiltPackage(path, settings.arch, version, settings.extras, path.stat().st_size,
                        installed, wheels, downloaded)
