"""`fleet ota` rollout commands that need no lab: refusals before anything changes, the IoT
Jobs engine end to end against moto's server (HTTP), status and abort."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import pytest
from fixtures_bundle import make_bundle, new_key
from labkit import run_cli

INVENTORY = {
    "hosts.yaml": "".join(
        f"{name}:\n  hostname: 127.0.0.1\n  port: 9\n  groups: [site-{site}]\n"
        f"  data: {{site: {site}, hardware: jetson-xavier-nx, arch: aarch64}}\n"
        for name, site in (("berlin-01", "berlin"), ("berlin-02", "berlin"),
                           ("lisbon-01", "lisbon"))),
    "groups.yaml": "site-berlin:\n  data: {site: berlin}\nsite-lisbon:\n  data: {site: lisbon}\n",
    "defaults.yaml": "username: root\n",
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    inv = tmp_path / "inventories/lab"
    inv.mkdir(parents=True)
    for name, text in INVENTORY.items():
        (inv / name).write_text(text)
    (tmp_path / "os-1.1.0.bundle").write_bytes(make_bundle(new_key()))
    return tmp_path


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--batches", "1,ten"], "--batches: 'ten' is not a device count or a percentage"),
        (["--max-fail-percentage", "150"], "--max-fail-percentage: 150.0 is greater than"),
        (["--offline", "later"], "--offline: 'later' is not one of"),
        (["--order", "random"], "--order: 'random' is not one of"),
        (["--limit", "nobody"], "unknown device(s) in --limit: nobody"),
    ],
)
def test_bad_input_is_refused_before_anything_changes(project, args, needle):
    res = run_cli(project, "ota", "rollout", str(project / "os-1.1.0.bundle"), "-i", "lab", *args)
    assert res.exit_code == 2 and needle in res.stderr, res.stderr
    assert not (project / ".fleet/rollouts").exists() or not list(
        (project / ".fleet/rollouts").glob("*.jsonl"))


def test_a_device_typo_in_ota_install_names_the_argument_not_limit(project):
    res = run_cli(project, "ota", "install", "berlin-1", str(project / "os-1.1.0.bundle"),
                  "-i", "lab")
    assert res.exit_code == 2, res.stderr
    assert "unknown device(s) in DEVICE: berlin-1" in res.stderr and "--limit" not in res.stderr


def test_bad_policy_file_names_file_and_line(project):
    policy = project / "policy.yaml"
    policy.write_text("batches: [1, '10%']\nmax_failures: 0\n")
    res = run_cli(project, "ota", "plan", str(project / "os-1.1.0.bundle"), "-i", "lab",
                  "--policy", str(policy))
    assert res.exit_code == 2
    assert f"{policy}:2: $.max_failures: 0 is less than the minimum of 1" in res.stderr


def test_plan_lists_batches_and_unreachable_devices_without_touching_them(project):
    res = run_cli(project, "ota", "plan", str(project / "os-1.1.0.bundle"), "-i", "lab",
                  "--batches", "1,100%", "--engine", "iot-jobs", "--max-failures", "2", "--json")
    assert res.exit_code == 0, res.stderr
    plan = json.loads(res.stdout)
    assert plan["batches"] == [["berlin-01"], ["berlin-02", "lisbon-01"]]
    assert {f["state"] for f in plan["devices"]} == {"offline"}
    assert plan["iot_jobs"]["config"]["jobExecutionsRolloutConfig"]["exponentialRate"][
        "baseRatePerMinute"] == 1
    assert plan["iot_jobs"]["notes"][0].startswith("max_failures:")


def test_status_of_an_unknown_rollout(project):
    res = run_cli(project, "ota", "status", "r-nope")
    assert res.exit_code == 2 and "no rollout 'r-nope'" in res.stderr


@pytest.fixture
def moto(monkeypatch):
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-central-1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset = urllib.request.Request(f"http://127.0.0.1:{port}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=10).close()  # moto's state is shared per process
    import boto3

    boto3.client("s3").create_bucket(
        Bucket="fleet-artifacts", CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    iot = boto3.client("iot")
    for name in ("berlin-01", "berlin-02", "lisbon-01"):
        iot.create_thing(thingName=name)
    yield iot
    urllib.request.urlopen(reset, timeout=10).close()
    server.stop()


def test_iot_jobs_engine_creates_a_job_then_status_and_abort_read_it(project, moto):
    bundle = str(project / "os-1.1.0.bundle")
    res = run_cli(project, "ota", "rollout", bundle, "-i", "lab", "--engine", "iot-jobs",
                  "--bucket", "fleet-artifacts", "--batches", "1,100%",
                  "--max-fail-percentage", "10", "--json")
    assert res.exit_code == 0, res.stderr  # the job is created; devices take it from here
    report = json.loads(res.stdout.splitlines()[-1])["report"]
    job_id = report["id"]
    assert report["status"] == "running" and report["counts"] == {"pending": 3}
    job = moto.describe_job(jobId=job_id)["job"]
    assert sorted(t.rsplit("/", 1)[-1] for t in job["targets"]) == [
        "edgefleet-berlin", "edgefleet-lisbon"]  # whole sites: their thing groups
    assert job["abortConfig"]["criteriaList"][0]["thresholdPercentage"] == 10.01
    document = json.loads(moto.get_job_document(jobId=job_id)["document"])
    with urllib.request.urlopen(document["bundle"]["url"], timeout=10) as resp:
        assert resp.read() == Path(bundle).read_bytes()

    res = run_cli(project, "ota", "abort", job_id, "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["status"] == "aborted"
    assert moto.describe_job(jobId=job_id)["job"]["status"] == "CANCELED"
    res = run_cli(project, "ota", "resume", job_id)
    assert res.exit_code == 2 and "nothing to resume" in res.stderr


def test_iot_jobs_engine_needs_a_bucket(project):
    res = run_cli(project, "ota", "rollout", str(project / "os-1.1.0.bundle"), "-i", "lab",
                  "--engine", "iot-jobs")
    assert res.exit_code == 2 and "needs an S3 bucket" in res.stderr
