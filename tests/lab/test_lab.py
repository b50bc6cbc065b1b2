"""The lab: devices survive down/up, faults, reboot, PID-safe shutdown."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fleet_runtime import slots
from labkit import run_cli

from fleet.lab import Lab, pid_is


def test_status_json_and_state_survives_down_up(lab: Lab) -> None:
    marker = lab.layout("berlin-01").state / "survives.txt"
    marker.write_text("still here")
    before = lab.devices()["berlin-01"].serial
    lab.down()
    assert all(not lab.running(d) for d in lab.devices().values())
    lab.up(2, 2)
    assert marker.read_text() == "still here" and lab.devices()["berlin-01"].serial == before
    res = run_cli(lab.project.root, "lab", "status", "--json")
    rows = json.loads(res.stdout)["devices"]
    assert len(rows) == 4 and all(r["running"] and r["software"] == "1.0.0" for r in rows)


def test_down_only_stops_processes_it_started(lab: Lab) -> None:
    dev = lab.devices()["lisbon-01"]
    assert dev.pid and pid_is(dev.pid, str(lab.root("lisbon-01")), dev.ssh)
    assert not pid_is(os.getpid(), str(lab.root("lisbon-01")), dev.ssh)  # a foreign PID is not ours


def test_offline_fault_persists_across_up(lab: Lab) -> None:
    lab.fault("lisbon-02", "offline")
    lab.up(2, 2)
    assert not lab.running(lab.devices()["lisbon-02"])
    assert lab.faults("lisbon-02") == ["offline"]
    lab.fault("lisbon-02", "clear")
    assert lab.running(lab.devices()["lisbon-02"]) and lab.faults("lisbon-02") == []


def test_reboot_restarts_the_device_and_records_boot_time(lab: Lab) -> None:
    old_pid = lab.devices()["berlin-02"].pid
    lab.reboot("berlin-02")
    dev = lab.devices()["berlin-02"]
    assert dev.pid != old_pid and lab.running(dev)
    assert (lab.layout("berlin-02").run / "boot-time.json").exists()
    assert slots.software_version(lab.layout("berlin-02")) == "1.0.0"


def test_unknown_fault_and_device_are_refused(lab: Lab) -> None:
    res = run_cli(lab.project.root, "lab", "fault", "berlin-01", "meltdown")
    assert res.exit_code == 2 and "unknown fault" in res.stderr
    res = run_cli(lab.project.root, "lab", "fault", "nowhere-01", "offline")
    assert res.exit_code == 2 and "no lab device" in res.stderr


def test_inventory_written_for_the_lab(lab: Lab) -> None:
    res = run_cli(lab.project.root, "inventory", "list", "-i", "lab", "--json")
    devices = json.loads(res.stdout)["devices"]
    assert {d["name"] for d in devices} == set(lab.devices())
    assert all(Path(d["data"]["agent"]).name == "fleet-agent" for d in devices)
    assert all(d["groups"] == [f"site-{d['site']}"] for d in devices)


def test_concurrent_reboots_keep_every_device_record(lab: Lab) -> None:
    """A rollout reboots many devices at once: no lab.json update may be lost."""
    from concurrent.futures import ThreadPoolExecutor

    names = sorted(lab.devices())
    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(lab.reboot, names))
    devices = lab.devices()
    assert all(lab.running(devices[n]) for n in names)
    assert len({devices[n].pid for n in names}) == len(names)


def test_factory_on_an_existing_lab_says_it_changed_nothing(lab: Lab) -> None:
    res = run_cli(lab.project.root, "lab", "up", "--factory", "--sites", "2",
                  "--devices-per-site", "2")
    assert res.exit_code == 0, res.stderr
    said = " ".join(res.stderr.split())  # the console wraps long lines
    assert "--factory changed nothing" in said and "fleet lab reset DEVICE" in said
    assert all(r["provisioned"] for r in lab.status())  # nothing was reset behind our back


def test_the_lab_writes_a_cameras_csv_that_imports(lab: Lab) -> None:
    root = lab.project.root
    csv_path = root / "inventories/lab/cameras.csv"
    assert csv_path.is_file()
    assert run_cli(root, "devices", "register", "-i", "lab").exit_code == 0
    res = run_cli(root, "cameras", "import", str(csv_path), "--dry-run",
                  env={"LAB_CAMERA_PASSWORD": "lab-test-password"})
    assert res.exit_code == 0, res.stderr


def test_up_without_sizes_restarts_the_lab_as_it_is(lab: Lab) -> None:
    before = sorted(lab.devices())
    res = run_cli(lab.project.root, "lab", "up", "--json")
    assert res.exit_code == 0, res.stderr
    assert sorted(r["name"] for r in json.loads(res.stdout)["devices"]) == before  # not 3 x 3
    assert "created" not in res.stderr
