"""How a device is rebooted and waited for, chosen from its inventory data.

A device reboots itself (``fleet-agent reboot``) and the controller knocks
until it answers again. A device whose host data carries ``power_cycle`` is
power-cycled from the controller instead: that argv list (a PDU outlet, a BMC,
the lab's simulated power button) runs here, without a shell, and returns once
the device is back; if its last stdout line is a JSON object with ``port`` (and
``hostname``), the device answers there now. The lab writes that key for its
devices (``fleet lab up``), so the domain never has to know which devices are
simulated.

>>> restarter_for(task.host).reboot(task)                 # doctest: +SKIP
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Protocol

from nornir.core.inventory import Host
from nornir.core.task import Task

from fleet.agent import agent_for
from fleet.errors import DeviceError, FleetError
from fleet.processes import clean_env
from fleet.transport import CONNECTION_NAME

POWER_CYCLE = "power_cycle"  # host data key: argv run on the controller to power-cycle the box


class Restarter(Protocol):
    """How a device is rebooted and waited for."""

    def reboot(self, task: Task) -> None: ...


@dataclass
class AgentRestarter:
    """``fleet-agent reboot``, then reconnect until the device reports a new boot."""

    timeout_s: float = 300.0
    poll_s: float = 3.0

    def reboot(self, task: Task) -> None:
        """Back when SSH answers and the agent reports a boot after this one: a box shutting
        down keeps answering (systemd stops services first) with the boot it is leaving."""
        before = _boots(task)
        agent_for(task).call("reboot")
        disconnect(task)
        deadline = time.monotonic() + self.timeout_s
        while True:
            time.sleep(self.poll_s)  # let it go down before we knock
            try:
                if _boots(task) > before:  # fleet-agent-boot.service ran: it is back
                    return
            except FleetError:
                disconnect(task)
            if time.monotonic() > deadline:
                raise DeviceError(f"{task.host.name}: did not come back within "
                                  f"{self.timeout_s:.0f}s of the reboot") from None


def _boots(task: Task) -> int:
    """The device's boot counter (every `fleet-agent boot` adds one)."""
    return agent_for(task).slots().boots


@dataclass
class CommandRestarter:
    """Runs the host's ``power_cycle`` command; it returns when the device is back."""

    argv: list[str]
    timeout_s: float = 300.0

    def reboot(self, task: Task) -> None:
        disconnect(task)
        try:
            # Never the controller's environment: it may hold the CA passphrase.
            proc = subprocess.run(self.argv, capture_output=True, text=True, env=clean_env(),
                                  stdin=subprocess.DEVNULL, timeout=self.timeout_s)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DeviceError(f"{task.host.name}: power cycle did not run: {exc}",
                              fix=f"check data.{POWER_CYCLE} in the inventory") from None
        if proc.returncode != 0:
            said = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
            raise DeviceError(f"{task.host.name}: power cycle failed: "
                              f"{said[-1] if said else f'exit {proc.returncode}'}")
        move(task.host, last_json(proc.stdout))


def last_json(text: str) -> dict[str, Any]:
    """The JSON object on the last line of `text`, or {} when there is none."""
    lines = text.strip().splitlines()
    try:
        found = json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def move(host: Host, answer: dict[str, Any]) -> None:
    """Follow a device that came back on another address (a lab port was taken meanwhile)."""
    if isinstance(answer.get("port"), int):
        host.port = answer["port"]
    if isinstance(answer.get("hostname"), str) and answer["hostname"]:
        host.hostname = answer["hostname"]


def disconnect(task: Task) -> None:
    """Drop the cached SSH connection (it dies with a reboot); the next call reconnects."""
    if CONNECTION_NAME in task.host.connections:
        try:
            task.host.close_connection(CONNECTION_NAME)
        except Exception:  # noqa: BLE001 - a dead transport may fail to close; it is gone anyway
            task.host.connections.pop(CONNECTION_NAME, None)


def restarter_for(host: Host, timeout_s: float = 300.0) -> Restarter:
    """The host's ``power_cycle`` command when its data has one, else the agent's reboot;
    either waits up to `timeout_s` for the device to come back (a rollout passes its
    policy's ``offline_wait``)."""
    argv = host.data.get(POWER_CYCLE)
    if argv is None:
        return AgentRestarter(timeout_s=timeout_s)
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise DeviceError(f"{host.name}: data.{POWER_CYCLE} is not a command line",
                          fix="give it as a list of strings: [program, arg, ...]")
    return CommandRestarter(list(argv), timeout_s=timeout_s)
