"""The IoT Jobs engine against moto's server over HTTP, with unmodified boto3.

moto plays AWS IoT and S3 (a real HTTP server on 127.0.0.1). moto keeps job
executions QUEUED (it has no devices and no Jobs data plane); the device side
is tested in tests/runtime/test_jobs.py against mosquitto.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from nornir.core import Nornir
from nornir.core.inventory import Defaults, Groups, Host, Hosts, Inventory

from fleet.inventory import Selection
from fleet.project import Project
from fleet.rollout import engine, iot_rollout
from fleet.rollout.iot_jobs import AwsTarget, IotJobs, job_config, report_from_executions, translate
from fleet.rollout.policy import Policy
from fleet.rollout.report import Report


@pytest.fixture(scope="module")
def moto_server():
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws(moto_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    reset(moto_server)  # moto's state is per process, shared by every server in it
    import boto3

    s3 = boto3.client("s3", region_name="eu-central-1")
    s3.create_bucket(Bucket="fleet-artifacts",
                     CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    iot = boto3.client("iot", region_name="eu-central-1")
    for name in ("berlin-01", "berlin-02", "lisbon-01"):
        iot.create_thing(thingName=name)
    yield iot
    reset(moto_server)


def reset(server: str) -> None:
    request = urllib.request.Request(f"{server}/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=10).close()


@pytest.mark.parametrize(
    ("policy", "total", "rollout"),
    [
        (Policy(batches=(1, "10%", "100%"), concurrency=10), 50,
         {"maximumPerMinute": 10, "exponentialRate": {
             "baseRatePerMinute": 1, "incrementFactor": 5.0,
             "rateIncreaseCriteria": {"numberOfSucceededThings": 1}}}),
        (Policy(batches=(2, "20%"), concurrency=4), 20,
         {"maximumPerMinute": 4, "exponentialRate": {
             "baseRatePerMinute": 2, "incrementFactor": 2.0,
             "rateIncreaseCriteria": {"numberOfSucceededThings": 2}}}),
        (Policy(batches=(5,), concurrency=20), 100, {"maximumPerMinute": 20}),
    ],
)
def test_batches_map_to_rollout_rates(policy, total, rollout):
    assert job_config(policy, total)["jobExecutionsRolloutConfig"] == rollout


def test_thresholds_and_timeouts_map():
    config = job_config(Policy(batches=(3,), max_fail_percentage=20, device_timeout=601), 30)
    assert config["abortConfig"] == {"criteriaList": [{
        "failureType": "ALL", "action": "CANCEL", "thresholdPercentage": 20.01,
        "minNumberOfExecutedThings": 3}]}
    assert config["timeoutConfig"] == {"inProgressTimeoutInMinutes": 11}
    assert "abortConfig" not in job_config(Policy(max_fail_percentage=100), 5)


def test_unmappable_fields_are_reported_not_dropped():
    notes = translate(Policy(max_failures=3, per_site_concurrency=1), 10).notes
    assert any(n.startswith("max_failures:") for n in notes)
    assert any(n.startswith("per_site_concurrency:") for n in notes)
    assert translate(Policy(), 10).notes == []


def test_create_job_uploads_bundle_and_reads_executions(aws, tmp_path):
    bundle = tmp_path / "os-1.1.0.bundle"
    bundle.write_bytes(b"signed bundle bytes" * 100)
    jobs = IotJobs(AwsTarget(bucket="fleet-artifacts", region="eu-central-1"))
    policy = Policy(batches=(1, "100%"), max_fail_percentage=25, device_timeout=900)
    made = jobs.create("r-test-1", bundle, "1.1.0", policy, ["berlin-01", "berlin-02", "lisbon-01"])

    job = aws.describe_job(jobId="r-test-1")["job"]
    assert job["jobExecutionsRolloutConfig"]["exponentialRate"]["baseRatePerMinute"] == 1
    assert job["abortConfig"]["criteriaList"][0]["thresholdPercentage"] == 25.01
    assert job["timeoutConfig"] == {"inProgressTimeoutInMinutes": 15}
    assert job["jobExecutionsRolloutConfig"]["exponentialRate"]["incrementFactor"] == 2.0
    assert [t.rsplit("/", 1)[-1] for t in job["targets"]] == ["berlin-01", "berlin-02", "lisbon-01"]

    document = json.loads(aws.get_job_document(jobId="r-test-1")["document"])
    assert document["operation"] == "fleet-ota" and document["version"] == "1.1.0"
    assert document["bundle"]["sha256"] == made["sha256"]
    with urllib.request.urlopen(document["bundle"]["url"], timeout=10) as resp:  # presigned GET
        assert resp.read() == bundle.read_bytes()

    executions = jobs.executions("r-test-1")
    assert executions == {
        "berlin-01": {"status": "QUEUED", "outcome": "pending"},
        "berlin-02": {"status": "QUEUED", "outcome": "pending"},
        "lisbon-01": {"status": "QUEUED", "outcome": "pending"},
    }
    things = {"devices": ["berlin-01", "berlin-02", "lisbon-01"]}
    report = report_from_executions(Report(header=things), jobs.job("r-test-1"), executions)
    assert report.status == "running" and report.counts() == {"pending": 3}

    jobs.cancel("r-test-1", "operator abort")
    cancelled = report_from_executions(Report(header=things), jobs.job("r-test-1"), executions)
    assert cancelled.status == "aborted"


def test_whole_sites_target_site_thing_groups(aws, tmp_path):
    bundle = tmp_path / "b.bundle"
    bundle.write_bytes(b"x")
    jobs = IotJobs(AwsTarget(bucket="fleet-artifacts", region="eu-central-1",
                             role_arn="arn:aws:iam::123456789012:role/iot-presign"))
    jobs.create("r-test-2", bundle, "1.1.0", Policy(), ["berlin-01", "berlin-02"],
                sites={"berlin": ["berlin-01", "berlin-02"]})
    job = aws.describe_job(jobId="r-test-2")["job"]
    assert job["targets"][0].endswith(":thinggroup/edgefleet-berlin")
    assert job["presignedUrlConfig"]["roleArn"].endswith("role/iot-presign")
    doc = json.loads(aws.get_job_document(jobId="r-test-2")["document"])
    assert doc["bundle"]["url"].startswith("${aws:iot:s3-presigned-url:https://s3.amazonaws.com/")
    members = aws.list_things_in_thing_group(thingGroupName="edgefleet-berlin")["things"]
    assert sorted(members) == ["berlin-01", "berlin-02"]


def test_unregistered_devices_are_refused_before_anything_is_uploaded(aws, tmp_path):
    bundle = tmp_path / "b.bundle"
    bundle.write_bytes(b"x")
    jobs = IotJobs(AwsTarget(bucket="fleet-artifacts", region="eu-central-1"))
    with pytest.raises(Exception, match="not registered in AWS IoT: osaka-09"):
        jobs.create("r-test-3", bundle, "1.1.0", Policy(), ["berlin-01", "osaka-09"])
    listed = jobs.s3.list_objects_v2(Bucket="fleet-artifacts", Prefix="edgefleet/bundles/")
    assert all(not o["Key"].endswith("/b.bundle") for o in listed.get("Contents", []))


@dataclass
class AppWork:
    """What the IoT Jobs path reads of a work that is not OTA: kind, artifact, version."""

    artifact: Path
    kind: str = "app"
    version: str = "2.0.0"

    def header(self):
        return {"kind": self.kind, "artifact": str(self.artifact), "version": self.version}

    def job_release(self):
        return {"health": {"window_s": 5.0}, "cameras": {"camera_node": "synthetic:64x48@10"}}


def test_any_work_kind_is_handed_to_iot_jobs_and_read_back(aws, tmp_path):
    """Start, status and abort of an IoT Jobs rollout need no OTA: the job document names the
    work's kind, the journal keeps it, and status and abort go by the rollout id."""
    (tmp_path / "out").mkdir()
    project = Project.locate(tmp_path)
    package = tmp_path / "counter-2.0.0.tar"
    package.write_bytes(b"application package" * 10)
    nr = Nornir(inventory=Inventory(hosts=Hosts({n: Host(n, data={"site": "berlin"})
                                                 for n in ("berlin-01", "berlin-02")}),
                                    groups=Groups(), defaults=Defaults()))
    settings = {"bucket": "fleet-artifacts", "region": "eu-central-1"}
    report, made = iot_rollout.start(project, nr, AppWork(package), Policy(),
                                     Selection(limit=("berlin-01", "berlin-02")), settings)
    document = json.loads(aws.get_job_document(jobId=made["job_id"])["document"])
    assert document["operation"] == "fleet-app" and document["version"] == "2.0.0"
    # what every device shares rides in the document (the device builds its release from it)
    assert document["release"] == AppWork(package).job_release()
    assert document["steps"] == ["download", "stage", "activate", "health", "commit"]
    assert report.counts() == {"pending": 2}
    journaled = engine.status(project, report.id)
    assert journaled.header["kind"] == "app" and journaled.header["engine"] == "iot-jobs"
    assert iot_rollout.status(journaled).counts() == {"pending": 2}
    assert iot_rollout.abort(journaled, "change freeze").status == "aborted"



def test_app_devices_that_disagree_on_camera_uris_cannot_share_one_job(tmp_path):
    from fleet.apps.work import AppWork as RealWork
    from fleet.errors import UsageError

    work = RealWork(Project.locate(tmp_path), tmp_path / "a.appbundle", None,
                    health={"min_fps": 2.0})
    work.uri_cameras = {"berlin-01": {"camera_node": "rtsp://10.0.0.7/s"},
                        "berlin-02": {"camera_node": "rtsp://10.0.0.7/s"}}
    assert work.job_release() == {"health": {"min_fps": 2.0},
                                  "cameras": {"camera_node": "rtsp://10.0.0.7/s"}}
    work.uri_cameras["berlin-02"] = {"camera_node": "rtsp://10.0.0.8/s"}
    with pytest.raises(UsageError, match="per-device-config: the devices' camera URIs differ"):
        work.job_release()
