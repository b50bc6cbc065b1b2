"""How the domain reboots a device is chosen from inventory data, never by asking the lab.

End to end (a lab device rebooted through the `power_cycle` command the lab writes) is
covered by every OTA test in tests/test_ota.py; these are the seam's own rules."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from nornir.core.inventory import Host

from fleet.errors import DeviceError
from fleet.lab import Lab
from fleet.project import Project
from fleet.reboot import AgentRestarter, CommandRestarter, restarter_for


def host(**data: object) -> Host:
    return Host(name="berlin-01", hostname="127.0.0.1", port=2201,
                data={"site": "berlin", "hardware": "orin", "arch": "aarch64", **data})


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_device_without_power_cycle_reboots_itself() -> None:
    assert isinstance(restarter_for(host()), AgentRestarter)


def test_a_device_with_power_cycle_is_power_cycled_by_that_command() -> None:
    chosen = restarter_for(host(power_cycle=["pdu", "cycle", "7"]))
    assert isinstance(chosen, CommandRestarter) and chosen.argv == ["pdu", "cycle", "7"]


@pytest.mark.parametrize("bad", ["pdu cycle 7", [], ["pdu", 7]])
def test_a_power_cycle_that_is_not_an_argv_list_is_refused(bad: object) -> None:
    with pytest.raises(DeviceError, match="data.power_cycle is not a command line"):
        restarter_for(host(power_cycle=bad))


def test_the_command_moves_the_device_when_it_says_so() -> None:
    h = host()
    said = json.dumps({"ok": True, "hostname": "127.0.0.2", "port": 40022})
    CommandRestarter(python(f"print('booting'); print({said!r})")).reboot(
        SimpleNamespace(host=h))  # type: ignore[arg-type]
    assert (h.hostname, h.port) == ("127.0.0.2", 40022)


def test_a_failed_power_cycle_names_the_device_and_what_the_command_said() -> None:
    h = host()
    argv = python("import sys; print('outlet 7 did not answer', file=sys.stderr); sys.exit(3)")
    with pytest.raises(DeviceError, match="berlin-01: power cycle failed: outlet 7 did not answer"):
        CommandRestarter(argv).reboot(SimpleNamespace(host=h))  # type: ignore[arg-type]
    assert (h.hostname, h.port) == ("127.0.0.1", 2201)


def test_the_power_cycle_command_never_sees_the_ca_passphrase(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLEET_CA_PASSPHRASE", "not-for-outlets")
    seen = tmp_path / "env.json"
    code = f"import json, os; open({str(seen)!r}, 'w').write(json.dumps(dict(os.environ)))"
    CommandRestarter(python(code)).reboot(SimpleNamespace(host=host()))  # type: ignore[arg-type]
    assert "FLEET_CA_PASSPHRASE" not in json.loads(seen.read_text())


def test_the_lab_inventory_names_its_own_power_button(tmp_path: Path) -> None:
    """What `fleet lab up` writes: the lab's reboot, waited for, for that device."""
    lab = Lab(Project.locate(tmp_path))
    argv = lab.power_cycle_argv("berlin-01")
    # `env` gives the power button (and the reboot it forks) the lab's mark for `lab down`
    assert argv[:2] == ["env", f"FLEET_LAB_DIR={lab.dir.resolve()}"]
    assert argv[3:5] == ["-m", "fleet.lab.reboot"] and argv[-2:] == [str(tmp_path), "berlin-01"]


def test_the_wait_for_a_rebooted_device_is_the_one_the_caller_gives() -> None:
    """A rollout passes its policy's offline_wait: a power cycle still running after it is
    a device that did not come back, named as such."""
    h = host(power_cycle=python("import time; time.sleep(30)"))
    chosen = restarter_for(h, timeout_s=0.5)
    assert isinstance(restarter_for(host(), timeout_s=42.0), AgentRestarter)
    assert restarter_for(host(), timeout_s=42.0).timeout_s == 42.0  # type: ignore[attr-defined]
    with pytest.raises(DeviceError, match="berlin-01: power cycle did not run: .*timed out"):
        chosen.reboot(SimpleNamespace(host=h))  # type: ignore[arg-type]


def test_a_resumed_rollout_waits_for_reboots_as_its_policy_says(tmp_path: Path) -> None:
    """`resume` rebuilds the work from the journal's header: the reboot wait comes back too."""
    from fleet.rollout.update import OtaWork

    header = {"kind": "ota", "artifact": str(tmp_path / "os.bundle"), "policy": {"offline_wait": 42}}
    made: list[tuple[Path, Path]] = []

    class Stub(OtaWork):
        @classmethod
        def for_bundle(cls, project: Project, bundle: Path, progress: object = None) -> OtaWork:
            made.append((project.root, bundle))
            return cls(project, bundle, "1.1.0", "os")

    project = Project.locate(tmp_path)
    work = Stub.from_header(project, header)
    assert made == [(project.root, tmp_path / "os.bundle")]
    assert work.params()["reboot_timeout"] == 42.0
    assert Stub.from_header(project, {**header, "policy": {}}).params()["reboot_timeout"] == 300.0
