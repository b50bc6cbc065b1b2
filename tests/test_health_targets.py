"""`fleet health` compares each device's software with its target in the registry."""

from __future__ import annotations

from fleet.health import DeviceHealth, apply_targets, exit_code, software_targets, summarize
from fleet.project import Project
from fleet.registry import open_registry


def test_no_registry_means_no_version_check(project: Project) -> None:
    assert software_targets(project, ["berlin-01"]) == {}
    assert not (project.state_dir / "registry.db").exists()  # not created as a side effect


def test_targets_come_from_the_registry(project: Project) -> None:
    registry = open_registry(project)
    registry.upsert_device("berlin-01", site="berlin", hardware="jetson", arch="aarch64")
    registry.upsert_device("berlin-02", site="berlin", hardware="jetson", arch="aarch64")
    registry.set_target_software("berlin-01", "1.1.0")
    registry.close()
    assert software_targets(project, ["berlin-01", "berlin-02"]) == {"berlin-01": "1.1.0"}


def test_a_device_behind_its_target_is_degraded_with_the_reason() -> None:
    reports = [DeviceHealth("a", "s", "healthy", software="1.0.0"),
               DeviceHealth("b", "s", "healthy", software="1.1.0"),
               DeviceHealth("c", "s", "offline", "no heartbeat received")]
    apply_targets(reports, {"a": "1.1.0", "b": "1.1.0", "c": "1.1.0"})
    assert (reports[0].verdict, reports[0].reason) == ("degraded", "runs 1.0.0, target 1.1.0")
    assert reports[1].verdict == "healthy" and reports[1].check("version")["status"] == "ok"
    assert reports[2].check("version") == {}
    assert summarize(reports)["offline"] == 1 and exit_code(reports) == 2
