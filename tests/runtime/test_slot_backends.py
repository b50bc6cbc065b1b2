"""Slot backends: the `current` link of the directories backend, and Jetson rootfs A/B.

The nvbootctrl backend runs against a stand-in `nvbootctrl` on PATH
(tests/fake_nvbootctrl.py, with the bootloader's part of a boot) because the
real one needs a Jetson; the agent runs as the real `fleet-agent` program.
Power loss in every step, for both backends: test_power_loss.py.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fleet_runtime import slot_backends, slots
from fleet_runtime.layout import Layout, atomic_write, atomic_write_json
from fleet_runtime.slot_backends import BootSlots, Verdict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fake_nvbootctrl  # noqa: E402
from fixtures_bundle import default_files, make_bundle, make_device, new_key  # noqa: E402

KEY = new_key()
AGENT = str(Path(sys.executable).parent / "fleet-agent")
SELFTEST_FAIL = b"#!/bin/sh\necho 'camera pipeline did not start' >&2\nexit 3\n"

# `nvbootctrl -t rootfs dump-slots-info` on a Xavier NX (R35), as NVIDIA's forum shows it
# after rootfs A failed its three tries: the bootloader switched to B.
L4T_DUMP = """Current rootfs slot: B
Active rootfs slot: B
num_slots: 2
slot: 0,             retry_count: 0,             status: unbootable
slot: 1,             retry_count: 3,             status: normal
"""


@pytest.fixture()
def nv_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The stand-in first on PATH, for this test and the agents it starts."""
    tool = fake_nvbootctrl.install(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tool.parent}:{os.environ['PATH']}")
    return tool


def nv_device(root: Path, version: str = "1.0.0") -> Layout:
    """A device provisioned for rootfs A/B: slots.json names the backend, the board is flashed."""
    layout = make_device(root, KEY, version)
    atomic_write_json(slot_backends.config_path(layout), {"backend": "nvbootctrl"})
    fake_nvbootctrl.flash(root)
    return layout


def agent(layout: Layout, *argv: str) -> dict[str, Any]:
    proc = subprocess.run([AGENT, *argv], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "FLEET_ROOT": str(layout.root)})
    assert proc.stdout.count("\n") == 1, (proc.stdout, proc.stderr)
    return dict(json.loads(proc.stdout))


def reboot(layout: Layout) -> dict[str, Any]:
    """Power on: the bootloader picks the slot, then the boot unit runs `fleet-agent boot`."""
    fake_nvbootctrl.power_on(layout.root)
    return agent(layout, "boot")


def bootctl(layout: Layout, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nvbootctrl", "-t", "rootfs", *argv], capture_output=True, text=True,
                          env={**os.environ, "FLEET_ROOT": str(layout.root)}, timeout=30)


def install_and_activate(layout: Layout, **bundle: Any) -> None:
    bundle_path = layout.root.parent / "update.bundle"
    bundle_path.write_bytes(make_bundle(KEY, **bundle))
    assert agent(layout, "install", str(bundle_path), "--activate")["ok"]


# ---------------------------------------------------------------------------- choosing


def test_without_a_config_the_device_uses_directories(tmp_path: Path) -> None:
    layout = make_device(tmp_path / "dev", KEY)
    assert slot_backends.for_layout(layout).name == "directories"
    slot_backends.write_config(layout, "nvbootctrl", "/usr/sbin/nvbootctrl")
    chosen = slot_backends.for_layout(layout)
    assert isinstance(chosen, slot_backends.NvBootCtrl)
    assert chosen.command == "/usr/sbin/nvbootctrl"


def test_provisioning_cannot_write_a_bad_config(tmp_path: Path) -> None:
    layout = make_device(tmp_path / "dev", KEY)
    with pytest.raises(slots.SlotError, match="'grub' is not one of"):
        slot_backends.write_config(layout, "grub")
    assert not slot_backends.config_path(layout).exists()


@pytest.mark.parametrize(("content", "says"), [
    (b'{"backend": "grub"}', "backend: 'grub' is not one of ['directories', 'nvbootctrl']"),
    (b'{"backend": "nvbootctrl", "retries": 3}', "top level: Additional properties"),
    (b'{"backend": "nvbootctrl", "nvbootctrl": ""}', "nvbootctrl: '' should be non-empty"),
    (b'{"backend": ', "is not valid JSON"),
])
def test_a_bad_config_is_one_line_and_changes_nothing(tmp_path: Path, content: bytes,
                                                      says: str) -> None:
    layout = make_device(tmp_path / "dev", KEY)
    atomic_write(slot_backends.config_path(layout), content)
    before = layout.boot_json.read_bytes()
    out = agent(layout, "boot")
    assert out["error"]["code"] == "bad-config"
    assert says in out["error"]["message"] and str(slot_backends.config_path(layout)) in \
        out["error"]["message"] and "\n" not in out["error"]["message"]
    assert layout.boot_json.read_bytes() == before


def test_nvbootctrl_missing_from_path_is_named(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    layout = make_device(tmp_path / "dev", KEY)
    atomic_write_json(slot_backends.config_path(layout), {"backend": "nvbootctrl"})
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    before = layout.boot_json.read_bytes()
    out = agent(layout, "boot")
    assert out["error"]["code"] == "bootctl-missing"
    assert "nvbootctrl not found on PATH" in out["error"]["message"]
    assert layout.boot_json.read_bytes() == before


# ---------------------------------------------------------------------------- directories


def test_the_current_link_follows_the_running_slot(tmp_path: Path) -> None:
    layout = make_device(tmp_path / "dev", KEY)
    link = layout.slots / slot_backends.LINK
    assert os.readlink(link) == "a" and (link / "opt/edgefleet/VERSION").read_text() == "1.0.0\n"
    slots.install(layout, io.BytesIO(make_bundle(KEY)))
    slots.activate(layout)
    assert os.readlink(link) == "a"  # nothing changes before the reboot
    slots.boot(layout)
    assert os.readlink(link) == "b" and (link / "opt/edgefleet/VERSION").read_text() == "1.1.0\n"
    slots.rollback(layout, "operator")
    assert os.readlink(link) == "a" and slots.problems(layout) == []


def test_a_cut_between_making_the_link_and_renaming_it_keeps_the_old_link(tmp_path: Path) -> None:
    layout = make_device(tmp_path / "dev", KEY)
    slots.install(layout, io.BytesIO(make_bundle(KEY)))
    slots.activate(layout)
    proc = subprocess.run([AGENT, "boot"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "FLEET_ROOT": str(layout.root),
                               slots.CRASH_ENV: "link"})
    assert proc.returncode == -9
    assert os.readlink(layout.slots / slot_backends.LINK) == "a"  # the old one, whole
    assert [p.name for p in layout.slots.glob(".current-*")] != []  # the new one, not renamed
    slots.boot(layout)
    assert os.readlink(layout.slots / slot_backends.LINK) == "b"
    assert list(layout.slots.glob(".current-*")) == []


def test_a_device_from_before_the_link_gets_one_at_boot(tmp_path: Path) -> None:
    layout = make_device(tmp_path / "dev", KEY)
    (layout.slots / slot_backends.LINK).unlink()
    assert slots.boot(layout)["slot"] == "a"
    assert os.readlink(layout.slots / slot_backends.LINK) == "a"


# ---------------------------------------------------------------------------- nvbootctrl


def test_parse_dump_reads_l4t_output() -> None:
    assert slot_backends.parse_dump(L4T_DUMP) == BootSlots(
        current="b", active="b", retries={"a": 0, "b": 3}, unbootable=frozenset({"a"}))
    with pytest.raises(ValueError, match="not rootfs slot information"):
        slot_backends.parse_dump("Current bootloader slot: A\nActive bootloader slot: A\n")


def test_the_stand_in_falls_back_as_l4t_documents(tmp_path: Path) -> None:
    """Three tries of a slot that never gets marked, then the other slot (NVIDIA's own check)."""
    fake_nvbootctrl.flash(tmp_path)
    assert [fake_nvbootctrl.power_on(tmp_path) for _ in range(4)] == [0, 0, 0, 1]
    state = fake_nvbootctrl.load(tmp_path)
    state["slots"][1]["retry_count"] = 3  # the service marks B's boot good
    assert slot_backends.parse_dump(fake_nvbootctrl.dump(state)) == \
        slot_backends.parse_dump(L4T_DUMP)


DOC = {"state": "trial", "committed_slot": "a", "pending": "b"}


@pytest.mark.parametrize(("doc", "boot", "verdict"), [
    # boot.json expected, the bootloader did -> what boot records
    ({**DOC, "state": "idle", "pending": None}, BootSlots("a", "a"), None),
    ({**DOC, "state": "installing", "pending": None}, BootSlots("a", "a"), None),
    ({**DOC, "state": "activated"}, BootSlots("b", "b", {"b": 2}), Verdict("trial", 2)),
    (DOC, BootSlots("b", "b", {"b": 0}), Verdict("trial", 0)),
    (DOC, BootSlots("a", "a", unbootable=frozenset("b")), Verdict("fell-back")),
    (DOC, BootSlots("a", "a"), Verdict("fell-back")),  # a rollback cut before persisting
    ({**DOC, "state": "activated"}, BootSlots("a", "a", unbootable=frozenset("b")),
     Verdict("fell-back")),  # its trial boots never reached the agent
    ({**DOC, "state": "activated"}, BootSlots("a", "a"), Verdict("not-armed")),
    ({**DOC, "state": "idle", "pending": None}, BootSlots("b", "b"), Verdict("wrong-slot")),
])
def test_judge_a_boot(doc: dict[str, Any], boot: BootSlots, verdict: Verdict | None) -> None:
    assert slot_backends.judge(doc, boot) == verdict


def test_update_through_nvbootctrl(tmp_path: Path, nv_path: Path) -> None:
    layout = nv_device(tmp_path / "dev")
    assert reboot(layout)["slot"] == "a"
    install_and_activate(layout)
    assert "Active rootfs slot: B" in bootctl(layout, "dump-slots-info").stdout
    booted = reboot(layout)
    assert (booted["event"], booted["slot"], booted["version"]) == ("boot-trial", "b", "1.1.0")
    assert booted["trials_left"] == 2  # the bootloader's retry count, counted down once
    assert bootctl(layout, "is-slot-marked-successful", "1").returncode == 1  # not before commit
    assert agent(layout, "commit")["changed"] is True
    assert bootctl(layout, "is-slot-marked-successful", "1").returncode == 0
    for _ in range(5):  # committed: the retries are given back at each boot
        assert reboot(layout)["slot"] == "b"
    assert agent(layout, "slots")["state"] == "idle" and slots.problems(layout) == []


def test_a_trial_that_never_commits_falls_back_in_the_bootloader(tmp_path: Path,
                                                                  nv_path: Path) -> None:
    layout = nv_device(tmp_path / "dev")
    reboot(layout)
    install_and_activate(layout)
    assert [reboot(layout)["trials_left"] for _ in range(3)] == [2, 1, 0]  # never committed
    back = reboot(layout)  # retries exhausted: the bootloader starts slot A
    assert (back["event"], back["slot"], back["version"]) == ("fallback", "a", "1.0.0")
    report = agent(layout, "slots")
    assert (report["state"], report["last_error"]["code"]) == ("idle", "fallback")
    assert report["slots"]["b"]["status"] == "failed"
    assert report["slots"]["b"]["reason"] == slots.FALLBACK_REASON
    assert "slot: 1,             retry_count: 0,             status: unbootable" in \
        bootctl(layout, "dump-slots-info").stdout
    assert os.readlink(layout.slots / slot_backends.LINK) == "a"
    install_and_activate(layout, version="1.2.0")  # the next update gets slot B back
    assert reboot(layout)["version"] == "1.2.0"


def test_a_failed_selftest_rolls_back_through_the_bootloader(tmp_path: Path,
                                                             nv_path: Path) -> None:
    layout = nv_device(tmp_path / "dev")
    reboot(layout)
    files = {**default_files("1.1.0"), "bin/selftest": SELFTEST_FAIL}
    install_and_activate(layout, files=files, modes={"bin/selftest": 0o755},
                         hooks={"selftest": "bin/selftest"})
    assert "Active rootfs slot: B" in bootctl(layout, "dump-slots-info").stdout
    assert reboot(layout)["selftest"]["ok"] is False
    refused = agent(layout, "commit")  # the flow's gate: it rolls back by itself
    assert refused["error"]["code"] == "selftest-failed"
    assert "rolled back to the committed slot" in refused["error"]["message"]
    assert "Active rootfs slot: A" in bootctl(layout, "dump-slots-info").stdout
    again = agent(layout, "rollback", "--reason", "selftest failed")  # the operator, too late
    assert (again["changed"], again["slot"], again["flow"]) == (False, "a", "restoring")
    back = reboot(layout)
    assert (back["event"], back["slot"], back["version"]) == ("boot", "a", "1.0.0")
    report = agent(layout, "slots")
    assert (report["last_error"]["code"], report["slots"]["b"]["status"]) == ("rollback", "failed")


def test_a_slot_the_bootloader_started_by_surprise_is_refused(tmp_path: Path,
                                                              nv_path: Path) -> None:
    layout = nv_device(tmp_path / "dev")
    slots.install(layout, io.BytesIO(make_bundle(KEY)))
    assert bootctl(layout, "set-active-boot-slot", "1").returncode == 0  # by hand, not the agent
    out = reboot(layout)
    assert out["error"]["code"] == "wrong-slot"
    assert "slot b" in out["error"]["message"] and "reboot" in out["error"]["message"]
    assert "Active rootfs slot: A" in bootctl(layout, "dump-slots-info").stdout
    assert reboot(layout)["slot"] == "a"
