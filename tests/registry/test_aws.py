"""The aws registry backend against moto's server over HTTP, checked through unmodified boto3."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from labkit import run_cli

from fleet import pki
from fleet.project import Project
from fleet.registry import devices, open_registry
from fleet.registry.aws import AwsRegistry

REGION = "eu-central-1"
PASSPHRASE = "aws-test-passphrase"
HOSTS = [
    {
        "name": "berlin-01",
        "hostname": "127.0.0.1",
        "port": 2201,
        "data": {"site": "berlin", "serial": "SN-B1", "hardware": "orin", "arch": "aarch64"},
    },
    {
        "name": "berlin-02",
        "hostname": "127.0.0.1",
        "port": 2202,
        "data": {"site": "berlin", "serial": "SN-B2", "hardware": "orin", "arch": "aarch64"},
    },
    {
        "name": "paris-01",
        "hostname": "127.0.0.1",
        "port": 2203,
        "data": {"site": "paris", "serial": "SN-P1", "hardware": "xavier", "arch": "aarch64"},
    },
]
HEADER = "name,device,rtsp_url,username,password,description,tags"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch):
    """boto3 clients on the moto server (the same endpoint the registry gets from fleet.yaml)."""
    import boto3

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("FLEET_CA_PASSPHRASE", PASSPHRASE)
    iot = boto3.client("iot", region_name=REGION, endpoint_url=moto_endpoint)
    sm = boto3.client("secretsmanager", region_name=REGION, endpoint_url=moto_endpoint)
    yield iot, sm
    _reset(iot, sm)


def _reset(iot, sm) -> None:
    """moto keeps state for the whole module: leave nothing for the next test."""
    for thing in iot.list_things()["things"]:
        for arn in iot.list_thing_principals(thingName=thing["thingName"])["principals"]:
            iot.detach_thing_principal(thingName=thing["thingName"], principal=arn)
        iot.delete_thing(thingName=thing["thingName"])
    for cert in iot.list_certificates()["certificates"]:
        for policy in iot.list_attached_policies(target=cert["certificateArn"])["policies"]:
            iot.detach_policy(policyName=policy["policyName"], target=cert["certificateArn"])
        iot.update_certificate(certificateId=cert["certificateId"], newStatus="INACTIVE")
        iot.delete_certificate(certificateId=cert["certificateId"])
    for policy in iot.list_policies()["policies"]:
        iot.delete_policy(policyName=policy["policyName"])
    for group in iot.list_thing_groups()["thingGroups"]:
        iot.delete_thing_group(thingGroupName=group["groupName"])
    for secret in sm.list_secrets(IncludePlannedDeletion=True)["SecretList"]:
        sm.delete_secret(SecretId=secret["ARN"], ForceDeleteWithoutRecovery=True)


@pytest.fixture
def aws_project(tmp_path: Path, moto_endpoint: str, aws) -> Project:
    (tmp_path / "fleet.yaml").write_text(
        f"registry: {{backend: aws, region: {REGION}, endpoint_url: '{moto_endpoint}'}}\n"
    )
    project = Project.locate(tmp_path)
    ca = pki.init_ca(project, org="Acme", passphrase=PASSPHRASE.encode())
    ca.record_issued(
        [
            ca.issue_device(h["name"], serial=h["data"]["serial"], site=h["data"]["site"])
            for h in HOSTS
        ]
    )
    return project


def _secret_names(sm) -> set[str]:
    return {s["Name"] for s in sm.list_secrets()["SecretList"]}


def test_register_creates_things_groups_certificates_and_policies(
    aws_project: Project, aws
) -> None:
    iot, _ = aws
    registry = open_registry(aws_project)
    assert isinstance(registry, AwsRegistry)
    result = devices.register(aws_project, registry, HOSTS)
    assert result["created"] == ["berlin-01", "berlin-02", "paris-01"]
    assert sorted(result["certificates"]) == ["berlin-01", "berlin-02", "paris-01"]
    again = devices.register(aws_project, registry, HOSTS)  # idempotent, in AWS too
    assert (
        again["unchanged"] == ["berlin-01", "berlin-02", "paris-01"] and again["certificates"] == []
    )

    things = {t["thingName"]: t for t in iot.list_things()["things"]}
    assert set(things) == {"berlin-01", "berlin-02", "paris-01"}
    assert things["paris-01"]["attributes"] == {
        "site": "paris",
        "serial": "SN-P1",
        "hardware": "xavier",
        "arch": "aarch64",
    }
    in_group = {
        g: sorted(t for t in iot.list_things_in_thing_group(thingGroupName=g)["things"])
        for g in ("edgefleet-berlin", "edgefleet-paris")
    }
    assert in_group == {
        "edgefleet-berlin": ["berlin-01", "berlin-02"],
        "edgefleet-paris": ["paris-01"],
    }

    certs = iot.list_certificates()["certificates"]
    assert len(certs) == 3 and {c["status"] for c in certs} == {"ACTIVE"}
    for host in HOSTS:
        name = host["name"]
        (cert_arn,) = iot.list_thing_principals(thingName=name)["principals"]
        pem = iot.describe_certificate(certificateId=cert_arn.rsplit("/", 1)[1])[
            "certificateDescription"
        ]["certificatePem"]
        assert pem.strip() == (aws_project.certs / "devices" / f"{name}.crt").read_text().strip()
        attached = iot.list_attached_policies(target=cert_arn)["policies"]
        assert [p["policyName"] for p in attached] == [f"edgefleet-{name}"]
        doc = json.loads(iot.get_policy(policyName=f"edgefleet-{name}")["policyDocument"])
        resources = [
            r
            for s in doc["Statement"]
            for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
        ]
        assert any(r.endswith(f":client/{name}") for r in resources)
        assert all(f"/{name}/" in r or r.endswith(f"client/{name}") for r in resources)
        assert not any(r.endswith("*") and f"/{name}/" not in r for r in resources)
    assert registry.get_device("berlin-01")["cert_fingerprint"].startswith("sha256:")
    registry.close()


def test_camera_import_puts_credentials_in_secrets_manager(
    aws_project: Project, aws, tmp_path: Path
) -> None:
    iot, sm = aws
    registry = open_registry(aws_project)
    devices.register(aws_project, registry, HOSTS)
    registry.close()
    rows = (
        [HEADER]
        + [f"cam-{i},{HOSTS[i % 3]['name']},rtsp://10.0.0.{i}/s1,admin,pw-{i},," for i in range(12)]
        + ["open-cam,paris-01,rtsp://10.0.1.1/s1,,,,"]
    )
    path = tmp_path / "cams.csv"
    path.write_text("\n".join(rows) + "\n")
    res = run_cli(aws_project.root, "cameras", "import", str(path), "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["created"] == 13
    assert _secret_names(sm) == {f"edgefleet/cameras/cam-{i}" for i in range(12)}
    value = json.loads(sm.get_secret_value(SecretId="edgefleet/cameras/cam-7")["SecretString"])
    assert value == {"username": "admin", "password": "pw-7"}
    registry = open_registry(aws_project)
    assert (
        registry.camera_password("cam-7") == "pw-7" and registry.camera_password("open-cam") == ""
    )
    listed = json.loads(run_cli(aws_project.root, "cameras", "list", "--json").stdout)["cameras"]
    assert len(listed) == 13 and {c["password"] for c in listed} == {"***", ""}
    stored = registry.conn.execute(
        "SELECT password_ref FROM cameras WHERE name = 'cam-7'"
    ).fetchone()
    assert stored[0].startswith("aws:arn:") and "pw-7" not in stored[0]

    planted = "Planted-Aws-Secret-55e1"
    path.write_text(f"{HEADER}\ncam-1,berlin-02,rtsp://admin:{planted}@10.0.0.1/s1,,,,\n"
                    "cam-4,berlin-02,rtsp://10.0.0.4/s1,,,,\n")
    res = run_cli(aws_project.root, "cameras", "import", str(path), "--on-conflict", "update")
    assert res.exit_code == 0 and planted not in res.stdout + res.stderr
    assert "edgefleet/cameras/cam-4" not in _secret_names(sm)  # no password any more
    assert registry.camera_password("cam-1") == planted
    shown = run_cli(aws_project.root, "cameras", "show", "cam-1", "--json")
    assert planted not in shown.stdout and json.loads(shown.stdout)["camera"]["password"] == "***"
    for state in (aws_project.root / ".fleet").rglob("*"):
        assert not state.is_file() or planted.encode() not in state.read_bytes(), state
    assert registry.remove_cameras(["cam-0"]) == ["cam-0"]
    assert "edgefleet/cameras/cam-0" not in _secret_names(sm)
    result = devices.deregister(
        aws_project, registry, "paris-01", passphrase=PASSPHRASE.encode(), remove_cameras=True
    )
    assert result["revoked_serials"] and "open-cam" in result["cameras_removed"]
    assert "paris-01" not in {t["thingName"] for t in iot.list_things()["things"]}
    assert "edgefleet-paris-01" not in {p["policyName"] for p in iot.list_policies()["policies"]}
    statuses = sorted(c["status"] for c in iot.list_certificates()["certificates"])
    assert statuses == ["ACTIVE", "ACTIVE", "REVOKED"]
    assert not any(n.endswith(("cam-2", "cam-5", "cam-8", "cam-11")) for n in _secret_names(sm))
    assert registry.get_device("paris-01") is None
    assert registry.history("paris-01")[0]["event"] == "deregistered"
    registry.close()


def test_failed_secret_write_rolls_back_the_whole_import(
    aws_project: Project, aws, tmp_path: Path
) -> None:
    _, sm = aws
    registry = open_registry(aws_project)
    devices.register(aws_project, registry, HOSTS)
    # A secret scheduled for deletion blocks creating one with its name: AWS refuses.
    sm.create_secret(Name="edgefleet/cameras/blocked", SecretString="{}")
    sm.delete_secret(SecretId="edgefleet/cameras/blocked", RecoveryWindowInDays=7)
    path = tmp_path / "cams.csv"
    path.write_text(
        f"{HEADER}\nfine-1,berlin-01,rtsp://h/a,u,p1,,\nfine-2,berlin-01,rtsp://h/b,u,p2,,\n"
        "blocked,berlin-02,rtsp://h/c,u,p3,,\n"
    )
    res = run_cli(aws_project.root, "cameras", "import", str(path))
    assert res.exit_code == 1 and "no camera was changed" in res.stderr
    assert registry.list_cameras() == []
    assert _secret_names(sm) == set()  # fine-1 and fine-2 were undone
    registry.close()


def test_secrets_rotate_is_refused_on_the_aws_backend(aws_project: Project) -> None:
    """Camera passwords live in Secrets Manager there: nothing local to re-seal."""
    for args in (("--dry-run",), ()):
        res = run_cli(aws_project.root, "secrets", "rotate", *args)
        assert res.exit_code == 2
        assert res.stderr.strip() == (
            "error: the aws registry keeps camera passwords in AWS Secrets Manager;"
            " rotate them there"
        )
    assert not list(aws_project.state_dir.glob("secret.key*"))


def test_the_aws_store_holds_a_sqlite_cache_and_closes_it(aws_project: Project) -> None:
    from fleet.registry.sqlite import SQLiteRegistry

    with open_registry(aws_project) as registry:
        assert isinstance(registry, AwsRegistry) and not isinstance(registry, SQLiteRegistry)
        assert isinstance(registry.cache, SQLiteRegistry)
        registry.upsert_device("cam-01", site="berlin")
        assert registry.cache.get_device("cam-01") == registry.get_device("cam-01")
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        registry.cache.conn.execute("SELECT 1")
