"""`fleet health` over a 12-device lab on real sshd, with lab fault injection."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from labkit import default_ssh_kind, run_cli, start_lab

from fleet.lab import Lab


@pytest.fixture(scope="module")
def lab12(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = start_lab(tmp_path_factory.mktemp("lab12"), 3, 4, default_ssh_kind())
    yield lab
    lab.down()


def health(lab: Lab, *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    res = run_cli(lab.project.root, "health", "-i", "lab", "--json", *args)
    return res.exit_code, json.loads(res.stdout)


def test_twelve_healthy_devices(lab12: Lab) -> None:
    code, report = health(lab12)
    assert code == 0
    assert report["summary"]["healthy"] == 12 and report["summary"]["total"] == 12
    dev = report["devices"][0]
    assert {"name", "site", "verdict", "reason", "software", "slot", "checks"} <= set(dev)
    assert {c["name"] for c in dev["checks"]} >= {"disk", "memory", "load", "temperature",
                                                   "gpu", "clock", "agent", "clock-skew"}


def test_offline_device_exits_2_and_is_named(lab12: Lab) -> None:
    lab12.fault("lisbon-03", "offline")
    try:
        code, report = health(lab12)
    finally:
        lab12.fault("lisbon-03", "online")
    assert code == 2
    bad = [d for d in report["devices"] if d["verdict"] != "healthy"]
    assert [(d["name"], d["verdict"]) for d in bad] == [("lisbon-03", "unreachable")]
    assert "cannot connect" in bad[0]["reason"]
    assert report["summary"]["healthy"] == 11


def test_disk_full_device_is_failing_exit_1(lab12: Lab) -> None:
    lab12.fault("osaka-02", "disk-full")
    try:
        code, report = health(lab12, "--site", "osaka")
    finally:
        lab12.fault("osaka-02", "clear")
    assert code == 1
    verdicts = {d["name"]: d["verdict"] for d in report["devices"]}
    assert verdicts == {"osaka-01": "healthy", "osaka-02": "failing", "osaka-03": "healthy",
                        "osaka-04": "healthy"}


def test_table_output_groups_by_site_and_names_the_reason(lab12: Lab) -> None:
    lab12.fault("berlin-04", "offline")
    try:
        res = run_cli(lab12.project.root, "health", "-i", "lab", "--site", "berlin")
    finally:
        lab12.fault("berlin-04", "online")
    assert res.exit_code == 2
    assert "3/4 healthy" in res.stdout and "unreachable" in res.stdout
    assert "berlin-04" in res.stdout and "Traceback" not in res.stdout + res.stderr
