"""The lab's MQTT broker and one ``fleet-agent daemon`` per lab device (`fleet lab up --mqtt`).

A broker CA under ``.fleet/lab/mqtt/``, the fleet CA (``certs/ca.crt``)
trusted as well when present (with its CRL), each lab device given a
certificate when it has none, its ``etc/fleet/mqtt.json`` written, and its
``fleet-agent daemon`` started. The broker itself is :class:`fleet.broker.Broker`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fleet_runtime.layout import Layout, atomic_write_json, read_json

from fleet.broker import Broker, BrokerState, Identity, mqtt_settings, use_local_broker
from fleet.processes import clean_env, reap, terminate
from fleet.project import Project

DEFAULT_INTERVAL = 10.0


class LabMqtt:
    """The lab's broker plus one ``fleet-agent daemon`` per running lab device."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.dir = project.state_dir / "lab" / "mqtt"
        self.broker = Broker(self.dir, trusted_cas=((project.certs / "ca.crt",
                                                      project.certs / "crl.pem"),))
        self.daemons_file = self.dir / "daemons.json"
        self.settings_file = self.dir / "settings.json"  # what `lab up --mqtt` was given

    def up(self, devices: dict[str, Path], interval: float = DEFAULT_INTERVAL) -> BrokerState:
        """Start the broker, give each device (name -> FLEET_ROOT) settings and a daemon.
        Behind `lab up --link`, a device's daemon runs in its site's namespace and reaches
        the broker across the site's link."""
        state = self._start_for(tuple(sorted(set(self._uplinks().values()))))
        use_local_broker(self.project, self.dir)  # the controller's broker from now on
        atomic_write_json(self.settings_file, {"heartbeat_s": interval})
        for name, root in sorted(devices.items()):
            if not Layout(root).device_json.exists():
                continue  # a factory device has no identity yet: no heartbeats before provisioning
            self.configure(name, Layout(root), state, interval)
            self.start_daemon(name, root)
        return state

    def _uplinks(self) -> dict[str, str]:
        """Lab device -> the broker address it reaches over its site link (`--link` only)."""
        from fleet.lab import Lab
        from fleet.lab.net import LabNet

        lab = Lab(self.project)
        net = LabNet(lab.dir).state()
        by_ns = {site.ns: site.host_addr for site in (net.sites.values() if net else [])}
        return {name: by_ns[dev.netns] for name, dev in lab.devices().items()
                if dev.netns in by_ns}

    def _netns(self, name: str) -> str:
        from fleet.lab import Lab

        devices = Lab(self.project).devices()
        return devices[name].netns if name in devices else ""

    def _start_for(self, site_hosts: tuple[str, ...]) -> BrokerState:
        """The broker, listening on every site link the lab has now (restarted if not)."""
        current = self.broker.state()
        if current is not None and self.broker.running() \
                and not set(site_hosts) <= set(current.site_hosts):
            self.broker.stop()
            return self.broker.start(current.port, current.controller_port, site_hosts)
        return self.broker.start(site_hosts=site_hosts)

    def follow_fault(self, name: str, root: Path, kind: str) -> None:
        """An offline lab device stops its heartbeats too; back online, they resume."""
        if kind == "offline":
            self.stop_daemon(name, root)
        elif kind in ("online", "clear") and self.broker.running() \
                and (root / "etc/fleet/mqtt.json").exists():
            self.start_daemon(name, root)

    def follow_provisioning(self, name: str, root: Path) -> bool:
        """A device provisioned (USB first boot) while the lab broker runs joins it with its
        new certificate: settings written, daemon (re)started. False when no broker runs."""
        state = self.broker.state()
        if state is None or not self.broker.running():
            return False
        if not self.broker.trusts(self.project.certs / "ca.crt"):
            state = self.broker.restart()  # the fleet CA was made after the broker started
        raw = read_json(self.settings_file, default={}) or {}
        self.stop_daemon(name, root)  # one left from an earlier identity
        self.configure(name, Layout(root), state, float(raw.get("heartbeat_s", DEFAULT_INTERVAL)))
        self.start_daemon(name, root)
        return True

    def configure(self, name: str, layout: Layout, state: BrokerState, interval: float) -> None:
        """The device's MQTT identity (its own certificate when it has one) and settings."""
        if layout.device_crt.exists() and layout.device_key.exists():
            identity = Identity(layout.device_crt, layout.device_key, Path(state.ca))
        else:
            identity = self.broker.ca.issue(name, layout.etc, stem="mqtt")
        from fleet.health import agent_flags

        atomic_write_json(layout.etc / "mqtt.json",
                          mqtt_settings(state, identity, interval, agent_flags(self.project),
                                        endpoint=self._uplinks().get(name, "")))

    def revoke_identity(self, name: str) -> list[str]:
        """After ``fleet ca revoke``: also revoke what the lab broker's own CA gave `name`
        (its ``etc/fleet/mqtt.crt`` from before provisioning), which the fleet CRL does not
        cover. Applies when the broker next (re)starts. The serials revoked."""
        if not (self.dir / "ca" / "ca.crt").exists():
            return []  # no lab broker was ever set up: nothing issued
        from fleet.lab import Lab

        on_disk = Layout(Lab(self.project).root(name)).etc / "mqtt.crt"
        return self.broker.ca.revoke(name, (on_disk,) if on_disk.exists() else ())

    def daemons(self) -> dict[str, int]:
        return {k: int(v) for k, v in (read_json(self.daemons_file, default={}) or {}).items()}

    def start_daemon(self, name: str, root: Path) -> int:
        from fleet.lab.net import runs_in

        running = self.daemons()
        if name in running and daemon_alive(running[name], root):
            if runs_in(running[name], self._netns(name)):
                return running[name]
            self.stop_daemon(name, root)  # the device moved to or from a site link
            running = self.daemons()
        agent = str(Path(sys.executable).parent / "fleet-agent")
        log = (root / ".lab").joinpath("daemon.out")
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            from fleet.lab.net import inside

            proc = subprocess.Popen(inside(self._netns(name), [agent, "daemon"]), stdout=out, stderr=out,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env={**clean_env(), "FLEET_ROOT": str(root)})
        running[name] = proc.pid
        atomic_write_json(self.daemons_file, running)
        return proc.pid

    def stop_daemon(self, name: str, root: Path) -> bool:
        running = self.daemons()
        if name not in running:
            return False
        pid = running.pop(name)
        atomic_write_json(self.daemons_file, running)
        if not daemon_alive(pid, root):
            return False
        terminate(pid)
        return True

    def down(self, roots: dict[str, Path]) -> int:
        """Stop every daemon and the broker (by PID); returns how many daemons stopped."""
        stopped = sum(self.stop_daemon(name, roots.get(name, Path("/nonexistent")))
                      for name in list(self.daemons()))
        self.broker.stop()
        return stopped


def daemon_alive(pid: int, root: Path) -> bool:
    """Is `pid` a live `fleet-agent daemon` for this device root (not a reused PID)?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text().split()
    if len(stat) > 2 and stat[2] == "Z":
        reap(pid)
        return False
    return b"daemon" in cmdline and f"FLEET_ROOT={root}".encode() in environ.split(b"\0")
