"""`fleet devices` on a lab fleet behind real sshd: register, list, show, tag, deregister."""

from __future__ import annotations

import json

import pytest
from labkit import run_cli

from fleet import pki
from fleet.lab import Lab
from fleet.transport import known_hosts_name

PASSPHRASE = "devices-test-passphrase"


def test_register_is_idempotent_and_reads_the_inventory(lab: Lab) -> None:
    root = lab.project.root
    res = run_cli(root, "devices", "register", "-i", "lab", "--json")
    assert res.exit_code == 0, res.stderr
    assert sorted(json.loads(res.stdout)["created"]) == sorted(lab.devices())
    again = json.loads(run_cli(root, "devices", "register", "-i", "lab", "--json").stdout)
    assert again["created"] == [] and sorted(again["unchanged"]) == sorted(lab.devices())
    devices = json.loads(run_cli(root, "devices", "list", "--json").stdout)["devices"]
    first = next(d for d in devices if d["name"] == "berlin-01")
    lab_dev = lab.devices()["berlin-01"]
    assert (first["site"], first["serial"], first["port"]) == (
        "berlin",
        lab_dev.serial,
        lab_dev.port,
    )
    # registering asked the running devices: no stale AWAITING_PROVISIONING until a refresh
    assert (first["status"], first["provisioning"], first["software_current"]) == (
        "ONLINE", "PROVISIONED", "1.0.0")
    assert first["tags"] == {"canary": ""}
    assert first["host_key_fingerprint"].startswith("SHA256:")


def test_list_filters_table_and_show(lab: Lab) -> None:
    root = lab.project.root
    run_cli(root, "devices", "register", "-i", "lab")
    by_site = json.loads(run_cli(root, "devices", "list", "--site", "lisbon", "--json").stdout)
    assert sorted(d["name"] for d in by_site["devices"]) == ["lisbon-01", "lisbon-02"]
    canary = json.loads(run_cli(root, "devices", "list", "--tag", "canary", "--json").stdout)
    assert [d["name"] for d in canary["devices"]] == ["berlin-01"]
    table = run_cli(root, "devices", "list").stdout
    assert "berlin-01" in table and "ONLINE" in table and "4 devices" in table
    shown = json.loads(run_cli(root, "devices", "show", "berlin-01", "--json").stdout)
    assert shown["device"]["name"] == "berlin-01"
    assert shown["history"][-1]["event"] == "registered"
    res = run_cli(root, "devices", "show", "nope")
    assert res.exit_code == 2 and "not registered" in res.stderr


def test_tag_sets_and_removes(lab: Lab) -> None:
    root = lab.project.root
    run_cli(root, "devices", "register", "-i", "lab")
    res = run_cli(root, "devices", "tag", "lisbon-02", "ring=2", "floor=3", "--json")
    assert json.loads(res.stdout)["tags"] == {"ring": "2", "floor": "3"}
    res = run_cli(root, "devices", "tag", "lisbon-02", "--remove", "floor", "--json")
    assert json.loads(res.stdout)["tags"] == {"ring": "2"}
    assert run_cli(root, "devices", "tag", "ghost", "a=b").exit_code != 0


def test_refresh_sets_status_software_and_offline(lab: Lab) -> None:
    root = lab.project.root
    run_cli(root, "devices", "register", "-i", "lab")
    res = run_cli(root, "devices", "refresh", "-i", "lab", "--json")
    assert res.exit_code == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)["devices"]}
    assert {r["status"] for r in rows.values()} == {"ONLINE"}
    assert {r["software"] for r in rows.values()} == {"1.0.0"}
    lab.fault("lisbon-02", "offline")
    try:
        res = run_cli(root, "devices", "refresh", "-i", "lab", "--site", "lisbon")
        assert res.exit_code == 1 and "OFFLINE" in res.stdout
        shown = json.loads(run_cli(root, "devices", "show", "lisbon-02", "--json").stdout)
        assert shown["device"]["status"] == "OFFLINE" and shown["device"]["last_seen"]
        assert shown["history"][0]["detail"] == {"connection": "OFFLINE", "was": "ONLINE"}
    finally:
        lab.fault("lisbon-02", "clear")


def test_deregister_revokes_certificate_unpins_host_key_keeps_history(
    lab: Lab, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    root, name = lab.project.root, "lisbon-01"
    if not (lab.project.certs / "ca.crt").exists():
        pki.init_ca(lab.project, org="Lab", passphrase=PASSPHRASE.encode())
    ca = pki.load_ca(lab.project, PASSPHRASE.encode())
    ca.record_issued([ca.issue_device(name)])
    run_cli(root, "devices", "register", "-i", "lab")
    assert json.loads(run_cli(root, "devices", "show", name, "--json").stdout)["device"][
        "cert_fingerprint"
    ].startswith("sha256:")
    camera_csv = tmp_path / "c.csv"
    camera_csv.write_text("name,device,rtsp_url\ncam-l1,lisbon-01,rtsp://10.0.0.1/s\n")
    assert run_cli(root, "cameras", "import", str(camera_csv)).exit_code == 0
    pin = known_hosts_name("127.0.0.1", lab.devices()[name].port)
    assert pin in lab.project.known_hosts.read_text()

    monkeypatch.delenv("FLEET_CA_PASSPHRASE", raising=False)
    refused = run_cli(root, "devices", "deregister", name, "--remove-cameras")
    assert refused.exit_code == 2 and "FLEET_CA_PASSPHRASE" in refused.stderr
    still = run_cli(root, "devices", "deregister", name, env={"FLEET_CA_PASSPHRASE": PASSPHRASE})
    assert still.exit_code == 2 and "--remove-cameras" in still.stderr  # cameras: refused first
    assert pin in lab.project.known_hosts.read_text()

    res = run_cli(
        root,
        "devices",
        "deregister",
        name,
        "--remove-cameras",
        "--json",
        env={"FLEET_CA_PASSPHRASE": PASSPHRASE},
    )
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["host_key_removed"] and out["cameras_removed"] == ["cam-l1"]
    assert out["revoked_serials"] and set(out["revoked_serials"]) <= set(
        json.loads((lab.project.certs / "revoked.json").read_text())
    )
    assert pin not in lab.project.known_hosts.read_text()
    assert run_cli(root, "devices", "show", name).exit_code == 2  # not found: bad input
    history = run_cli(root, "cameras", "list", "--json")
    assert "cam-l1" not in history.stdout
    from fleet.registry import open_registry

    registry = open_registry(lab.project)
    assert [e["event"] for e in registry.history(name)][:1] == ["deregistered"]
    registry.close()
