"""Device filesystem paths under FLEET_ROOT, and the one way we write state files.

A real appliance has FLEET_ROOT=/; the lab gives each simulated device its own
root so many devices can live on one machine.

>>> lay = Layout(Path("/tmp/dev1"))
>>> lay.device_json
PosixPath('/tmp/dev1/etc/fleet/device.json')
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

# The durable-file helpers live in fleet_runtime.durable; many modules import them from here.
from fleet_runtime.durable import atomic_write as atomic_write
from fleet_runtime.durable import atomic_write_json as atomic_write_json
from fleet_runtime.durable import fsync_dir as fsync_dir

ROOT_ENV = "FLEET_ROOT"


class Layout(NamedTuple):
    # A NamedTuple rather than a frozen dataclass: every agent call builds one, and
    # `dataclasses` (with inspect, ast and dis) is a fifth of a health call's imports (#19).
    root: Path

    @classmethod
    def from_env(cls) -> Layout:
        return cls(Path(os.environ.get(ROOT_ENV, "/")))

    # identity and configuration
    @property
    def etc(self) -> Path:
        return self.root / "etc/fleet"

    @property
    def device_json(self) -> Path:
        return self.etc / "device.json"

    @property
    def network_json(self) -> Path:
        return self.etc / "network.json"

    @property
    def device_crt(self) -> Path:
        return self.etc / "device.crt"

    @property
    def device_key(self) -> Path:
        return self.etc / "device.key"

    @property
    def ca_crt(self) -> Path:
        return self.etc / "ca.crt"

    @property
    def release_keys(self) -> Path:
        return self.etc / "release-keys"

    @property
    def ssh_dir(self) -> Path:
        return self.etc / "ssh"

    # state
    @property
    def state(self) -> Path:
        return self.root / "var/lib/fleet"

    @property
    def boot_json(self) -> Path:
        return self.state / "boot.json"

    @property
    def slots(self) -> Path:
        return self.state / "slots"

    def slot(self, name: str) -> Path:
        return self.slots / name

    @property
    def staging(self) -> Path:
        """Where the controller uploads bundles before installing them."""
        return self.state / "staging"

    @property
    def apps(self) -> Path:
        return self.state / "apps"

    def app_names(self) -> list[str]:
        """The applications deployed here (directories under `apps`), sorted. Here, not in
        `apps.versions`: a health call asks it first and imports the app modules only when
        the answer is not empty (#19)."""
        if not self.apps.is_dir():
            return []
        return sorted(p.name for p in self.apps.iterdir()
                      if not p.name.startswith(".") and p.is_dir())

    @property
    def runtime_token(self) -> Path:
        """The bearer token for the runtime's POST endpoints (0600; see fleet_runtime.http_token)."""
        return self.state / "runtime.token"

    @property
    def run(self) -> Path:
        return self.root / "run/fleet"

    @property
    def logs(self) -> Path:
        return self.root / "var/log/fleet"

    @property
    def lab_faults(self) -> Path:
        """Fault switches the lab sets on a simulated device (read by fleet_runtime.labhooks)."""
        return self.root / ".lab/faults.json"




class StateFileError(ValueError):
    """A device file that is not the JSON it should be (damaged, truncated, another encoding)."""


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON in `path`, `default` when it is missing, StateFileError when it is not JSON."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return default
    except ValueError as exc:  # a decoding error is a ValueError too
        raise StateFileError(f"{path} is not valid JSON ({exc})") from None
