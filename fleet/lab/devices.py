"""The lab: simulated appliances on this machine, each with its own FLEET_ROOT and SSH server.

A lab device is a real agent behind a real SSH server (OpenSSH `sshd` when
installed, asyncssh's server otherwise) on 127.0.0.1; only the hardware is
missing. A lab "reboot" runs the same boot logic a real boot does
(`fleet-agent boot`: slot choice, trial counter) and restarts the device's
services. State lives in ``.fleet/lab/``: ``lab.json`` and one root per device
under ``devices/``; it survives `down`/`up`.

Every process the lab starts carries ``FLEET_LAB_DIR=<this lab's dir>`` in its
environment from its first instruction (an OpenSSH server, which overwrites
that block, names its config under this dir on its command line), so `down`
finds it even when its PID never reached ``lab.json`` (the process that started
it died in between). A reboot runs in a detached process
(``fleet.lab.reboot``, its own session) that records itself in ``lab.json``:
like a real box, a lab device comes back even if the controller that rebooted
it is killed.

>>> lab = Lab(project)                                   # doctest: +SKIP
>>> lab.up(sites=3, per_site=4)                          # doctest: +SKIP
>>> lab.fault("berlin-02", "offline")                    # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fleet_runtime import slots
from fleet_runtime.durable import file_lock
from fleet_runtime.layout import (
    Layout,
    StateFileError,
    atomic_write,
    atomic_write_json,
    read_json,
)

from fleet import processes
from fleet.errors import ConfigError, DeviceError, FleetError, UsageError
from fleet.lab import net as lab_net
from fleet.project import Project

# Imported where used: every lab reboot starts this module (the power button, or `fleet lab
# reboot`'s detached reboot), and paramiko (fleet.transport) and cryptography were
# most of their start-up, paid on this machine's cores by every tool the benches compare.

SITE_NAMES = ("berlin", "lisbon", "osaka", "denver", "sydney", "toronto", "nairobi", "lima")
FACTORY_VERSION = "1.0.0"
FAULTS = ("offline", "online", "slow", "disk-full", "fallback", "no-reboot", "clear")
# One-shot faults the next `reboot` consumes: "fallback" = every trial boot of the new slot
# dies before anything commits it, so the boot logic itself falls back to the committed slot;
# "no-reboot" = the reboot does nothing (the device keeps running, SSH never drops).
BOOT_FAULTS = ("fallback", "no-reboot")
MAX_TRIAL_BOOTS = 16
HOST = "127.0.0.1"
LAB_ENV = "FLEET_LAB_DIR"  # marks every process a lab starts (see `Lab.strays`)
REBOOT_TIMEOUT_S = 120.0


@dataclass
class LabDevice:
    name: str
    site: str
    serial: str
    port: int
    hardware: str = "jetson-xavier-nx"
    arch: str = "aarch64"
    ssh: str = "openssh"
    factory: bool = False
    offline: bool = False
    pid: int | None = None
    tags: list[str] = field(default_factory=list)
    rebooting: int | None = None  # PID of the detached reboot in progress
    host: str = HOST  # its server's address: a site namespace's with `up --link`
    netns: str = ""  # the site's network namespace with `up --link` (fleet.lab.net)


def site_order(site: str) -> int:
    """A site's index (its namespace number with `--link`), from its name."""
    if site in SITE_NAMES:
        return SITE_NAMES.index(site)
    return int(site[4:]) - 1 if site.startswith("site") and site[4:].isdigit() else len(SITE_NAMES)


def site_name(index: int) -> str:
    return SITE_NAMES[index] if index < len(SITE_NAMES) else f"site{index + 1:02d}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def default_ssh() -> str:
    return "openssh" if shutil.which("sshd") or Path("/usr/sbin/sshd").exists() else "asyncssh"


def sshd_path() -> str:
    found = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(found).exists():
        raise ConfigError("OpenSSH sshd is not installed",
                          fix="apt-get install openssh-server, or use `--ssh asyncssh`")
    return found


class Lab:
    def __init__(self, project: Project) -> None:
        self.project = project
        self.dir = project.state_dir / "lab"
        self.file = self.dir / "lab.json"

    # ---- state -------------------------------------------------------------
    def devices(self) -> dict[str, LabDevice]:
        raw = read_json(self.file, default={"devices": {}})
        return {name: LabDevice(**d) for name, d in raw["devices"].items()}

    def _save(self, devices: dict[str, LabDevice]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.file, {"devices": {n: asdict(d) for n, d in devices.items()}})

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise read-modify-write of lab.json across threads and processes
        (a rollout reboots many lab devices at once)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.dir / "lab.lock"):
            yield

    def update(self, name: str, **fields: Any) -> LabDevice:
        """Change some fields of one device's record, atomically under the lab lock."""
        with self._locked():
            devices = self.devices()
            for key, value in fields.items():
                setattr(devices[name], key, value)
            self._save(devices)
            return devices[name]

    def device(self, name: str) -> LabDevice:
        devices = self.devices()
        if name not in devices:
            raise UsageError(f"no lab device named '{name}'",
                             fix=f"known: {', '.join(sorted(devices)) or 'none (run `fleet lab up`)'}")
        return devices[name]

    def root(self, name: str) -> Path:
        return self.dir / "devices" / name

    def layout(self, name: str) -> Layout:
        return Layout(self.root(name))

    # ---- lifecycle ------------------------------------------------------------
    def up(self, sites: int | None = 3, per_site: int | None = 3, *, ssh: str | None = None,
           factory: bool = False, link: str | None = None) -> list[LabDevice]:
        """Create missing devices (sites x per_site), start every SSH server, write the inventory.

        With neither size given, an existing lab restarts as it is (a new one gets 3 x 3), so
        `fleet lab up --mqtt` never grows a lab that was made smaller. With `link` (a rate such
        as "10mbit") each site sits behind its own shaped uplink."""
        if (sites is not None and sites < 1) or (per_site is not None and per_site < 1):
            raise UsageError("--sites and --devices-per-site must be at least 1")
        kind = ssh or default_ssh()
        if kind == "openssh":
            sshd_path()
        if link is not None:
            lab_net.check(link, factory or any(d.factory for d in self.devices().values()))
        with self._locked():
            devices = self.devices()
            if sites is None and per_site is None and devices:
                sites, per_site = 0, 0  # restart the lab as it is
            for s in range(3 if sites is None else sites):
                for i in range(1, (3 if per_site is None else per_site) + 1):
                    name = f"{site_name(s)}-{i:02d}"
                    if name not in devices:
                        devices[name] = self._create(name, site_name(s), kind, factory)
                    devices[name].ssh = kind
            self._save(devices)
        self._place({d.site: site_order(d.site) for d in devices.values()}, link)
        for name in devices:
            self.start(name)
        self.write_inventory()
        return list(self.devices().values())

    def _place(self, sites: dict[str, int], link: str | None) -> None:
        """Put each device where this `up` wants it: its site's namespace, or loopback.
        A device that moves is stopped first; a lab going back to loopback loses its links."""
        net = lab_net.LabNet(self.dir)
        where = {s: ("", HOST) for s in sites}
        if link is not None:
            state = net.up(sites, link)
            where = {s: (state.sites[s].ns, state.sites[s].site_addr) for s in sites}
        for name, dev in self.devices().items():
            want = where.get(dev.site, ("", HOST))
            if (dev.netns, dev.host) != want:
                self.stop(name)
                self.update(name, netns=want[0], host=want[1], port=0)  # start() picks it
        if link is None and net.state() is not None:
            net.down()

    def _create(self, name: str, site: str, ssh: str, factory: bool) -> LabDevice:
        serial = "EF" + hashlib.sha256(f"{site}/{name}".encode()).hexdigest()[:10].upper()
        dev = LabDevice(name=name, site=site, serial=serial, port=0, ssh=ssh, factory=factory,
                        tags=["canary"] if name.endswith("-01") and site == site_name(0) else [])
        root = self.root(name)
        if root.exists():
            shutil.rmtree(root)
        write_factory_image(Layout(root), FACTORY_VERSION)
        from fleet.lab.usb import lab_manufacture

        lab_manufacture(self.project, Layout(root), serial)  # hardware serial, pinned fleet CA
        if factory:
            dev.port = free_port()  # known now: archives pin the host key for [host]:port
        else:
            self.install_identity(dev)
        return dev

    def install_identity(self, dev: LabDevice) -> None:
        """What provisioning installs, done directly for a pre-provisioned lab device."""
        lay = self.layout(dev.name)
        atomic_write_json(lay.device_json, {
            "name": dev.name, "serial": dev.serial, "site": dev.site,
            "hardware": dev.hardware, "arch": dev.arch,
        })
        write_host_key(lay)
        from fleet.transport import controller_public_key

        authorized = lay.ssh_dir / "authorized_keys"
        authorized.write_text(controller_public_key(self.project) + "\n")
        authorized.chmod(0o600)
        self._install_release_keys(lay)

    def _install_release_keys(self, lay: Layout) -> None:
        release = self.project.certs / "release"
        lay.release_keys.mkdir(parents=True, exist_ok=True)
        for pub in sorted(release.glob("*.pub")) if release.is_dir() else []:
            shutil.copy2(pub, lay.release_keys / pub.name)

    def start(self, name: str) -> None:
        """Start a device's SSH server unless it is running, offline or unprovisioned."""
        dev = self.device(name)
        if dev.offline or self.running(dev) or not host_key_path(self.layout(name)).exists():
            return
        old_port = dev.port
        if dev.netns:  # only this site's servers listen in its namespace: the port is ours
            dev.port = lab_net.ssh_port(dev.name)
        elif not dev.port or not port_free(dev.port):
            dev.port = free_port()
        dev = self.update(name, port=dev.port, pid=self._spawn(dev))
        assert dev.pid is not None
        if dev.factory:  # its key was pinned from the provisioning archive, never from the device
            from fleet.lab.usb import move_pin

            if move_pin(self.project.known_hosts, HOST, old_port, dev.port):
                self.write_inventory()
        else:
            pub = host_key_path(self.layout(name)).with_suffix(".pub").read_text()
            if not pinned_alone(self.project.known_hosts, dev.host, dev.port, pub):
                from fleet.transport import pin_host_key

                pin_host_key(self.project.known_hosts, dev.host, dev.port, pub)
        wait_for_port(dev.port, dev.pid, self.root(name) / ".lab/ssh.log", host=dev.host)

    def _spawn(self, dev: LabDevice) -> int:
        root = self.root(dev.name)
        (root / ".lab").mkdir(parents=True, exist_ok=True)
        argv = (self._openssh_argv(dev) if dev.ssh == "openssh" else self._asyncssh_argv(dev))
        argv = lab_net.inside(dev.netns, argv)
        log = (root / ".lab/ssh.log").open("ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=self._device_env(dev))
        log.close()
        return proc.pid

    def _device_env(self, dev: LabDevice) -> dict[str, str]:
        bindir = str(Path(sys.executable).parent)
        return {**self._lab_env(), "FLEET_ROOT": str(self.root(dev.name)),
                "PATH": f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin"}

    def _lab_env(self) -> dict[str, str]:
        # Never the controller's environment: it may hold FLEET_CA_PASSPHRASE (issue 12.8).
        # The mark lets `lab down` find a process whose PID never reached lab.json.
        return {**processes.clean_env(), LAB_ENV: str(self.dir.resolve())}

    def _openssh_argv(self, dev: LabDevice) -> list[str]:
        root = self.root(dev.name)
        lay = Layout(root)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        env = self._device_env(dev)
        config = root / ".lab/sshd_config"
        config.write_text("\n".join([
            f"Port {dev.port}", f"ListenAddress {dev.host}",
            f"HostKey {host_key_path(lay)}",
            f"AuthorizedKeysFile {lay.ssh_dir / 'authorized_keys'}",
            f"PidFile {root / '.lab/sshd.pid'}",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes", "PermitRootLogin prohibit-password",
            "UsePAM no", "StrictModes no", "PrintMotd no", "UseDNS no",
            "MaxStartups 200:30:400", "MaxSessions 64", "LogLevel ERROR",
            # SHLVL=1: bash reads ~/.bashrc for an SSH command only as a top-level shell.
            # The lab logs in as this host's root, whose .bashrc may set up a developer's
            # tools (here pyenv: 0.1-0.3 s of CPU per command); a device's stock .bashrc
            # returns at once for a non-interactive shell, as the asyncssh lab's /bin/sh does.
            f"SetEnv FLEET_ROOT={env['FLEET_ROOT']} PATH={env['PATH']} SHLVL=1",
            "Subsystem sftp internal-sftp", "",
        ]))
        return [sshd_path(), "-D", "-e", "-f", str(config)]

    def _asyncssh_argv(self, dev: LabDevice) -> list[str]:
        lay = self.layout(dev.name)
        field = ["--root", str(lay.root)] if (lay.root / ".lab/password").exists() else []
        return [sys.executable, "-m", "fleet.lab.sshd", "--host", dev.host, "--port", str(dev.port),
                "--host-key", str(host_key_path(lay)),
                "--authorized-keys", str(lay.ssh_dir / "authorized_keys"), *field]

    def add_field_device(self, name: str, password: str, site: str = "field") -> LabDevice:
        """A box already in the field, for `fleet device bootstrap`: a factory image and
        serial, its own host key (not pinned here), its admin's password login, no edgefleet
        identity or trust anchor. Served by the asyncssh server: OpenSSH would check the
        password against this machine's /etc/shadow."""
        from fleet.lab.sshd import hash_password

        serial = "EF" + hashlib.sha256(f"{site}/{name}".encode()).hexdigest()[:10].upper()
        with self._locked():
            devices = self.devices()
            root = self.root(name)
            shutil.rmtree(root, ignore_errors=True)
            lay = Layout(root)
            write_factory_image(lay, FACTORY_VERSION)
            atomic_write_json(root / ".lab/hardware.json", {"serial": serial})
            write_host_key(lay)  # no authorized_keys: nobody's key yet
            atomic_write(root / ".lab/password", hash_password(password).encode(), 0o600)
            devices[name] = LabDevice(name=name, site=site, serial=serial, port=0,
                                      ssh="asyncssh", factory=True)
            self._save(devices)
        self.start(name)
        self.write_inventory()
        return self.device(name)

    def running(self, dev: LabDevice) -> bool:
        return dev.pid is not None and pid_is(dev.pid, str(self.root(dev.name)), dev.ssh)

    def stop(self, name: str) -> None:
        dev = self.device(name)
        if self.running(dev):
            assert dev.pid is not None
            processes.terminate(dev.pid)
        self.update(name, pid=None)

    def down(self) -> int:
        """Stop every process the lab started; device state stays on disk.

        Reboots first (so none starts a server behind our back), then each SSH server by
        its recorded PID, then any process still carrying this lab's mark (a server whose
        PID was lost when the process that started it died)."""
        stopped = self._stop_strays(reboots_only=True)
        for name, dev in self.devices().items():
            if self.running(dev):
                stopped += 1
            self.stop(name)
            stopped += self._stop_apps(name)
        stopped += self._stop_strays(reboots_only=False)
        lab_net.LabNet(self.dir).down()  # by name prefix: also what a killed `up` left
        if self.file.exists():
            with self._locked():
                devices = self.devices()
                for dev in devices.values():
                    dev.rebooting = None
                self._save(devices)
                for tmp in self.dir.glob(f".{self.file.name}.*.tmp"):
                    tmp.unlink()  # a writer killed mid-write; never the only copy of a PID now
        return stopped

    def _stop_apps(self, name: str) -> int:
        """The application supervisors (and runtimes) `fleet-agent app start` left running on
        this device, by the records they keep under its run/ (a real device's systemd units
        stop with it; the lab's processes are not children of anything the lab tracks)."""
        stopped = 0
        for record in sorted((self.layout(name).run / "apps").glob("*.json")):
            try:
                doc = read_json(record, default=None)
            except (OSError, StateFileError):  # a record cut short: nothing to find by it
                continue
            for key in ("pid", "child"):  # the supervisor first: it would restart the runtime
                pid = doc.get(key) if isinstance(doc, dict) else None
                if isinstance(pid, int) and processes.pid_runs(pid, "run", record.stem):
                    processes.terminate(pid)
                    stopped += 1
        # one started a moment ago may not have written its record yet: by its environment
        root = str(self.root(name))  # as the lab sets it for the device
        for pid in processes.marked("FLEET_ROOT", root, (f"{root}/var/lib/fleet/apps/",)):
            processes.terminate(pid)
            stopped += 1
        return stopped

    def strays(self) -> list[int]:
        """PIDs of live processes this lab started: by the mark in their environment, or
        (an OpenSSH server) by the config under this lab it was started with."""
        where = str(self.dir.resolve())
        sshd = ("sshd", f"{where}/devices/", "/.lab/sshd_config")  # an OpenSSH server's config
        return processes.marked(LAB_ENV, where, sshd)

    def _stop_strays(self, reboots_only: bool) -> int:
        stopped = 0
        for _ in range(3):  # a reboot killed mid-way may have just started a server
            found = [p for p in self.strays()
                     if not reboots_only or "fleet.lab.reboot" in processes.cmdline(p)]
            if not found:
                break
            for pid in found:
                processes.terminate(pid)
            stopped += len(found)
        return stopped

    def destroy(self) -> None:
        self.down()
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.project.inventories / "lab", ignore_errors=True)

    # ---- faults and reboot ----------------------------------------------------
    def fault(self, name: str, kind: str, *, seconds: float = 3.0) -> None:
        if kind not in FAULTS:
            raise UsageError(f"unknown fault '{kind}'", fix=f"use one of: {', '.join(FAULTS)}")
        self.device(name)
        if kind in ("offline", "online", "clear"):
            self._set_offline(name, kind == "offline")
        if kind in ("slow", "disk-full", "clear", *BOOT_FAULTS):
            self._set_fault_switch(name, kind, seconds)

    def _set_offline(self, name: str, offline: bool) -> None:
        self.update(name, offline=offline)
        self.stop(name) if offline else self.start(name)

    def _set_fault_switch(self, name: str, kind: str, seconds: float) -> None:
        lay = self.layout(name)
        faults = {} if kind == "clear" else read_json(lay.lab_faults, default={})
        if kind == "slow":
            faults["slow"] = seconds
        elif kind in ("disk-full", *BOOT_FAULTS):
            faults[kind] = True
        atomic_write_json(lay.lab_faults, faults)

    def _take_boot_fault(self, name: str) -> str | None:
        """The one-shot boot fault set on `name` (cleared as the reboot uses it), if any."""
        lay = self.layout(name)
        faults = read_json(lay.lab_faults, default={}) or {}
        kind = next((k for k in BOOT_FAULTS if faults.pop(k, None)), None)
        if kind is not None:
            atomic_write_json(lay.lab_faults, faults)
        return kind

    def faults(self, name: str) -> list[str]:
        dev = self.device(name)
        active = sorted(read_json(self.layout(name).lab_faults, default={}) or {})
        return (["offline"] if dev.offline else []) + active

    def reboot(self, name: str, fork: bool = False) -> dict[str, Any]:
        """Power-cycle: SSH goes away, the boot logic picks the slot, services come back.
        Done by a detached process (own session): it finishes even if this one dies, as a
        real box comes back by itself. This process waits for it and reports its answer.
        `fork`: a single-threaded caller (the power button, `fleet.lab.reboot --wait`) forks
        itself for it instead of starting one more interpreter. A `fallback` or
        `no-reboot` fault set on the device changes this one reboot."""
        self.device(name)
        lab_dir = self.root(name) / ".lab"
        lab_dir.mkdir(parents=True, exist_ok=True)
        answer_file = lab_dir / "reboot.json"
        answer_file.unlink(missing_ok=True)
        with (lab_dir / "reboot.log").open("ab") as log:
            if fork and processes.can_fork_detached():
                child: processes.Detached | subprocess.Popen[bytes] = processes.fork_detached(
                    lambda: self.reboot_and_answer(name), log)
            else:
                child = subprocess.Popen(
                    [sys.executable, "-m", "fleet.lab.reboot", str(self.project.root), name],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                    env=self._lab_env())
        try:
            child.wait(REBOOT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{name}: the lab reboot did not finish within "
                              f"{REBOOT_TIMEOUT_S:g}s", fix=f"see {lab_dir / 'reboot.log'}") from None
        answer = read_json(answer_file, default=None) or {}
        if not answer.get("ok"):
            raise DeviceError(f"{name}: reboot failed: {answer.get('error', 'no answer')}",
                              fix=f"see {lab_dir / 'reboot.log'}")
        return dict(answer["boot"])

    def reboot_and_answer(self, name: str) -> int:
        """The detached side of `reboot`: the reboot, then its answer in
        ``.lab/reboot.json`` for the process that asked (gone or not)."""
        answer_file = self.root(name) / ".lab/reboot.json"
        try:
            boot = self.reboot_here(name)
        except FleetError as exc:
            atomic_write_json(answer_file, {"ok": False, "error": exc.line()})
            return 1
        atomic_write_json(answer_file, {"ok": True, "boot": boot})
        return 0

    def reboot_here(self, name: str) -> dict[str, Any]:
        """The reboot itself, in this process (what `fleet.lab.reboot` runs). One reboot of
        a device at a time; the device record names this process while it runs."""
        with file_lock(self.root(name) / ".lab/reboot.lock"):
            fault = self._take_boot_fault(name)
            if fault == "no-reboot":
                return {"event": "none", "fault": fault}
            self.update(name, rebooting=os.getpid())
            try:
                self.stop(name)
                boot = run_boot(self.layout(name), self._device_env(self.device(name)))
                if fault == "fallback":
                    boot = self._boot_until_fallback(name, boot)
                self.start(name)
            finally:
                self.update(name, rebooting=None)
        return boot

    def _boot_until_fallback(self, name: str, boot: dict[str, Any]) -> dict[str, Any]:
        """Each trial boot dies before a commit: boot again until the boot logic falls back."""
        env = self._device_env(self.device(name))
        for _ in range(MAX_TRIAL_BOOTS):
            if boot.get("state") != "trial":
                break
            boot = run_boot(self.layout(name), env)
        return boot

    # ---- inventory -------------------------------------------------------------
    def write_inventory(self) -> Path:
        """inventories/lab/: one group per site, every device with its port and data."""
        from ruamel.yaml import YAML

        devices = self.devices()
        out = self.project.inventories / "lab"
        out.mkdir(parents=True, exist_ok=True)
        agent = str(Path(sys.executable).parent / "fleet-agent")
        hosts = {d.name: host_entry(d, agent, self.power_cycle_argv(d.name))
                 for d in devices.values()}
        groups = {f"site-{s}": {"data": {"site": s}} for s in sorted({d.site for d in devices.values()})}
        yaml = YAML()
        yaml.default_flow_style = False
        for fname, doc in (("hosts.yaml", hosts), ("groups.yaml", groups),
                           ("defaults.yaml", {"username": "root"})):
            with (out / fname).open("w") as fh:
                fh.write("# written by `fleet lab up`; edits are overwritten\n")
                yaml.dump(doc, fh)
        self._write_cameras_csv(out / "cameras.csv", devices)
        return out

    def power_cycle_argv(self, name: str) -> list[str]:
        """The command the inventory gives the controller for rebooting `name`
        (``data.power_cycle``, see fleet.reboot): `reboot`, waited for, in a process of its own."""
        # `env` gives it the lab's mark (see `strays`): its reboot is a fork of it, so
        # `lab down` finds that too, even before the reboot records itself.
        return ["env", f"{LAB_ENV}={self.dir.resolve()}", sys.executable, "-m",
                "fleet.lab.reboot", "--wait", str(self.project.root), name]

    @staticmethod
    def _write_cameras_csv(path: Path, devices: dict[str, LabDevice]) -> None:
        """Sample cameras for the lab's devices, ready for `fleet cameras import`: the first
        camera of each device takes its password from $LAB_CAMERA_PASSWORD."""
        from fleet.cameras import sample_csv

        rows: list[Mapping[str, Any]] = [
            {"name": d.name, "site": d.site} for d in sorted(devices.values(), key=lambda d: d.name)
        ]
        path.write_text(sample_csv(rows), encoding="utf-8")

    def status(self) -> list[dict[str, Any]]:
        rows = []
        for name, dev in sorted(self.devices().items()):
            lay = self.layout(name)
            rows.append({
                "name": name, "site": dev.site, "port": dev.port, "ssh": dev.ssh,
                "running": self.running(dev), "provisioned": lay.device_json.exists(),
                "software": slots.software_version(lay), "slot": slots.active_slot(lay),
                "faults": self.faults(name), "root": str(lay.root), "host": dev.host,
            })
        return rows


def host_entry(dev: LabDevice, agent: str, power_cycle: list[str]) -> dict[str, Any]:
    data: dict[str, Any] = {"site": dev.site, "serial": dev.serial, "hardware": dev.hardware,
                            "arch": dev.arch, "tags": list(dev.tags), "agent": agent,
                            "power_cycle": power_cycle}
    return {"hostname": dev.host, "port": dev.port, "groups": [f"site-{dev.site}"], "data": data}


def host_key_path(lay: Layout) -> Path:
    return lay.ssh_dir / "ssh_host_ed25519_key"


def pinned_alone(known_hosts: Path, host: str, port: int, public_openssh: str) -> bool:
    """Is `public_openssh` already the one key pinned for host:port (as
    `fleet.transport.pin_host_key` writes it)? A device rebooted on its old port keeps its
    pin, and the reboot then needs no known_hosts write (nor paramiko's import)."""
    name = host if port == 22 else f"[{host}]:{port}"
    want = f"{name} {' '.join(public_openssh.split()[:2])}"
    try:
        lines = known_hosts.read_text().splitlines()
    except FileNotFoundError:
        return False
    return [ln for ln in lines if ln.split(" ", 1)[0] == name] == [want]


def write_host_key(lay: Layout) -> str:
    """A fresh Ed25519 host key (private 0600, public beside it); returns the public line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    lay.ssh_dir.mkdir(parents=True, exist_ok=True)
    path = host_key_path(lay)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    path.write_bytes(pem)
    path.chmod(0o600)
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                        serialization.PublicFormat.OpenSSH).decode()
    path.with_suffix(".pub").write_text(pub + "\n")
    return pub


def write_factory_image(lay: Layout, version: str) -> None:
    """Slot A holds a small software image; slot B is empty; logs and staging exist."""
    image = lay.slot("a")
    (image / "opt/edgefleet").mkdir(parents=True, exist_ok=True)
    (image / "opt/edgefleet/VERSION").write_text(version + "\n")
    (image / "etc").mkdir(exist_ok=True)
    (image / "etc/os-release").write_text(f'NAME="edgefleet OS"\nVERSION_ID="{version}"\n')
    lay.slot("b").mkdir(parents=True, exist_ok=True)
    for d in (lay.etc, lay.staging, lay.apps, lay.logs, lay.run, lay.root / ".lab"):
        d.mkdir(parents=True, exist_ok=True)
    slots.factory_reset_state(lay, version)


def run_boot(lay: Layout, env: dict[str, str]) -> dict[str, Any]:
    """The boot-time slot choice (`fleet-agent boot`, what a real box runs at boot), then
    mark boot time. Anything but an ``ok`` answer is a failed boot. Run as a box's init runs
    it, not through `fleet.agent` (whose SSH half this process has no use for)."""
    agent = str(Path(sys.executable).parent / "fleet-agent")
    try:
        proc = subprocess.run([agent, "boot"], env={**env, "FLEET_ROOT": str(lay.root)},
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DeviceError(f"boot failed on {lay.root.name}: {exc}") from None
    answer = _last_json(proc.stdout)
    if not answer.get("ok"):
        said = answer.get("error") or proc.stderr.decode(errors="replace").strip()[-300:]
        raise DeviceError(f"boot failed on {lay.root.name}: {said or f'exit {proc.returncode}'}")
    atomic_write_json(lay.run / "boot-time.json", {"booted_at": time.time()})
    return answer


def _last_json(out: bytes) -> dict[str, Any]:
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        found = json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def pid_is(pid: int, marker: str, kind: str) -> bool:
    """Is `pid` alive and really our server (not a reused PID)?"""
    return processes.pid_runs(pid, "sshd" if kind == "openssh" else "fleet.lab.sshd", marker)


def wait_for_port(port: int, pid: int, log: Path, timeout: float = 15.0, host: str = HOST) -> None:
    processes.wait_for_port(port, pid, log, "lab SSH server", timeout, host=host)
