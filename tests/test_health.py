"""`fleet health` over a 12-device lab on real sshd, with lab fault injection."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from labkit import CALM_HEALTH, default_ssh_kind, run_cli, start_lab

from fleet.lab import Lab


@pytest.fixture(scope="module")
def lab12(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("lab12")
    (root / "fleet.yaml").write_text(CALM_HEALTH)  # "healthy" must not hang on the host's disk
    lab = start_lab(root, 3, 4, default_ssh_kind())
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
    # the summary alone names who needs attention (the README's `jq .summary`)
    named = [(d["name"], d["verdict"]) for d in report["summary"]["not_healthy"]]
    assert named == [("lisbon-03", "unreachable")]


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


def test_a_revoked_device_is_reported_revoked_not_valid(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Issue 12.14: after `fleet ca revoke`, health over SSH showed the certificate as
    valid for 825 days. It is looked up in the fleet CRL now."""
    from fleet_runtime.layout import atomic_write

    from fleet import pki

    lab = start_lab(tmp_path, 1, 2, default_ssh_kind())
    try:
        passphrase = "correct-horse-battery"
        ca = pki.init_ca(lab.project, org="Acme", passphrase=passphrase.encode())
        for name in lab.devices():
            issued = ca.issue_device(name)
            ca.record_issued([issued])
            atomic_write(lab.layout(name).device_crt, issued.cert_pem)
        victim, other = sorted(lab.devices())
        code, before = health(lab)
        assert code == 0 and {d["verdict"] for d in before["devices"]} == {"healthy"}
        res = run_cli(lab.project.root, "ca", "revoke", victim, "--json",
                      env={"FLEET_CA_PASSPHRASE": passphrase})
        assert res.exit_code == 0, res.stderr
        code, after = health(lab)
        devices = {d["name"]: d for d in after["devices"]}
        assert code == 1 and after["summary"]["revoked"] == 1
        assert devices[victim]["verdict"] == "revoked"
        cert = next(c for c in devices[victim]["checks"] if c["name"] == "certificate")
        assert cert["status"] == "fail" and cert["revoked"] is True
        assert "revoked on" in devices[victim]["reason"]
        assert devices[other]["verdict"] == "healthy"
        table = run_cli(lab.project.root, "health", "-i", "lab")
        assert "1 revoked" in table.stdout and "revoked" in table.stdout
    finally:
        lab.down()
