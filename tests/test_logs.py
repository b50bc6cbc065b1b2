"""`fleet logs export` over a 30-device lab on real sshd, and `--s3` against moto's server."""

from __future__ import annotations

import json
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_runtime.layout import atomic_write_json
from fleet_runtime.logs import verify_bundle
from labkit import default_ssh_kind, run_cli, start_lab

from fleet.lab import Lab

PASSWORD = "Pl4nted-Cam-Secret"


def plant(lab: Lab, name: str) -> None:
    """A camera password in the device's secrets, and the app logging it by mistake."""
    lay = lab.layout(name)
    atomic_write_json(lay.etc / "cameras.json", {"cameras": [
        {"name": "dock", "url": "rtsp://10.1.1.9/stream1", "username": "admin",
         "password": PASSWORD}]}, mode=0o600)
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    (lay.logs / "apps").mkdir(parents=True, exist_ok=True)
    (lay.logs / "apps/people-counter.log").write_text(
        f"{now} ERROR people-counter: DESCRIBE failed for rtsp://admin:{PASSWORD}@10.1.1.9/stream1\n"
        f"{now} INFO people-counter: retry with password={PASSWORD}\n"
        f"{now} INFO people-counter: 25.0 fps on dock\n")


@pytest.fixture(scope="module")
def lab30(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = start_lab(tmp_path_factory.mktemp("lab30"), 3, 10, default_ssh_kind())
    for name in lab.devices():
        plant(lab, name)
    yield lab
    lab.down()


def export(lab: Lab, out: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict]:
    res = run_cli(lab.project.root, "logs", "export", "-i", "lab", "--out", str(out), "--json",
                  *args, env=env)
    return res.exit_code, json.loads(res.stdout) if res.stdout.strip() else {"stderr": res.stderr}


def test_thirty_devices_thirty_verified_redacted_bundles(lab30: Lab, tmp_path: Path) -> None:
    code, report = export(lab30, tmp_path / "out")
    assert code == 0, report
    assert report["summary"]["exported"] == 30 and not report["summary"]["unreachable"]
    paths = sorted(tmp_path.joinpath("out").glob("*/*.tar.gz"))
    assert len(paths) == 30
    for b in report["bundles"]:
        path = Path(b["path"])
        assert path.parent.name == b["site"] and path.name.startswith(f"{b['device']}-")
        manifest = verify_bundle(path)
        assert manifest["device"] == b["device"] and manifest["redacted"]
        names = {f["path"] for f in manifest["files"]}
        assert "var/log/fleet/apps/people-counter.log" in names
        with tarfile.open(path) as tar:
            for member in tar:
                if member.isfile():
                    assert PASSWORD.encode() not in tar.extractfile(member).read(), member.name
    assert not list(tmp_path.joinpath("out").rglob("*.part"))


def test_unreachable_device_is_listed_and_exit_2(lab30: Lab, tmp_path: Path) -> None:
    lab30.fault("lisbon-04", "offline")
    try:
        code, report = export(lab30, tmp_path / "out", "--site", "lisbon")
    finally:
        lab30.fault("lisbon-04", "online")
    assert code == 2
    assert report["summary"]["unreachable"] == ["lisbon-04"]
    assert report["summary"]["exported"] == 9
    bad = next(b for b in report["bundles"] if b["device"] == "lisbon-04")
    assert "cannot connect" in bad["error"] and bad["path"] is None


def test_per_device_cap_keeps_the_newest_logs(lab30: Lab, tmp_path: Path) -> None:
    lay = lab30.layout("osaka-01")
    now = time.time()
    with (lay.logs / "runtime.log").open("w") as fh:
        for i in range(20000):
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - 20000 + i))
            fh.write(f"{stamp}.000Z INFO runtime: frame batch {i:06d} inference 11.2 ms\n")
    code, report = export(lab30, tmp_path / "out", "--limit", "osaka-01", "--max-bytes", "64k")
    assert code == 0, report
    bundle = report["bundles"][0]
    assert bundle["truncated"] and bundle["log_bytes"] <= 64 * 1024
    manifest = verify_bundle(Path(bundle["path"]))
    runtime = next(f for f in manifest["files"] if f["path"] == "var/log/fleet/runtime.log")
    assert runtime["truncated"] and runtime["end"] >= runtime["start"]


def test_bad_since_is_refused_before_any_device_is_touched(lab30: Lab, tmp_path: Path) -> None:
    res = run_cli(lab30.project.root, "logs", "export", "-i", "lab", "--out",
                  str(tmp_path / "out"), "--since", "yesterday")
    assert res.exit_code == 2
    assert "--since" in res.stderr
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[dict[str, str]]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    yield env
    server.stop()


def test_s3_upload_to_moto_server(lab30: Lab, tmp_path: Path, moto_s3: dict[str, str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    for key, value in moto_s3.items():
        monkeypatch.setenv(key, value)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="site-logs")
    code, report = export(lab30, tmp_path / "out", "--site", "berlin", "--s3",
                          "s3://site-logs/exports/2026", env=moto_s3)
    assert code == 0, report
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="site-logs")["Contents"])
    assert len(keys) == 10
    assert all(k.startswith("exports/2026/berlin/berlin-") and k.endswith(".tar.gz") for k in keys)
    first = report["bundles"][0]
    body = s3.get_object(Bucket="site-logs", Key=first["s3_uri"].split("/", 3)[3])["Body"].read()
    assert body == Path(first["path"]).read_bytes()
    assert os.environ["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1")
