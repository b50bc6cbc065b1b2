"""The device blob store and the app flow without a runtime: receive, refuse, resume,
stage by hard link, keep N versions, collect garbage, additive deployments, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from device_apps import agent, app_status, release_of, send_app, sha256
from fleet_runtime.apps.blobs import BlobStore
from fleet_runtime.layout import Layout


@pytest.fixture
def device(tmp_path: Path) -> Path:
    root = tmp_path / "dev"
    (root / "etc/fleet").mkdir(parents=True)
    return root


def tree(tmp_path: Path, name: str, files: dict[str, bytes]) -> Path:
    app = tmp_path / "src" / name
    for rel, data in files.items():
        (app / rel).parent.mkdir(parents=True, exist_ok=True)
        (app / rel).write_bytes(data)
    return app


def deploy(root: Path, app: Path, name: str, version: str, tmp_path: Path) -> dict:
    manifest = send_app(root, app, name, version, tmp_path)
    code, doc = agent(root, "app", "stage", str(manifest))
    assert code == 0, doc
    assert agent(root, "app", "activate", name, "--no-wait")[0] == 0
    code, doc = agent(root, "app", "commit", name, "--force")
    assert code == 0 and doc["app"]["state"] == "done", doc
    return doc["app"]


def test_put_stores_a_blob_that_matches_and_have_reports_it(device):
    data = b"model weights" * 1000
    sha = sha256(data)
    assert agent(device, "blobs", "have", sha)[1]["missing"] == [sha]
    code, doc = agent(device, "blobs", "put", sha, "--size", str(len(data)), stdin=data)
    assert code == 0 and doc["stored"], doc
    assert agent(device, "blobs", "have", sha)[1]["have"] == [sha]
    blob = BlobStore(Layout(device)).path(sha)
    assert blob.read_bytes() == data and blob.stat().st_mode & 0o777 == 0o444


def test_put_refuses_a_wrong_hash_and_keeps_nothing(device):
    data, other = b"the real file", b"something else"
    code, doc = agent(device, "blobs", "put", sha256(data), "--size", str(len(other)),
                      stdin=other)
    assert code == 1 and doc["error"]["code"] == "checksum", doc
    have = agent(device, "blobs", "have", sha256(data))[1]
    assert have["missing"] == [sha256(data)] and have["partial"] == {}


def test_put_refuses_a_full_disk_before_writing_a_byte(device):
    data = b"x" * 4096
    (device / ".lab").mkdir()
    (device / ".lab/faults.json").write_text(json.dumps({"disk-full": True}))
    code, doc = agent(device, "blobs", "put", sha256(data), "--size", "4096", stdin=data)
    assert code == 1 and doc["error"]["code"] == "disk-budget", doc
    assert "reserve" in doc["error"]["message"]
    assert agent(device, "blobs", "have", sha256(data))[1]["partial"] == {}


def test_put_refuses_a_blob_that_would_eat_the_reserve(device):
    (device / "etc/fleet/apps.json").write_text(json.dumps({"reserve_bytes": 1 << 60}))
    code, doc = agent(device, "blobs", "put", "ab" * 32, "--size", "10", stdin=b"0123456789")
    assert code == 1 and doc["error"]["code"] == "disk-budget", doc


def test_an_interrupted_blob_resumes_from_where_it_stopped(device):
    data = bytes(range(256)) * 400
    sha = sha256(data)
    code, doc = agent(device, "blobs", "put", sha, "--size", str(len(data)), stdin=data[:5000])
    assert code == 1 and doc["error"]["code"] == "short", doc
    assert agent(device, "blobs", "have", sha)[1]["partial"] == {sha: 5000}
    code, doc = agent(device, "blobs", "put", sha, "--size", str(len(data)), "--offset", "10",
                      stdin=data[10:])
    assert code == 1 and doc["error"]["code"] == "offset", doc
    code, doc = agent(device, "blobs", "put", sha, "--size", str(len(data)), "--offset", "5000",
                      stdin=data[5000:])
    assert code == 0 and doc["stored"], doc


def test_bad_input_is_a_usage_error_that_changes_nothing(device, tmp_path):
    code, doc = agent(device, "blobs", "have", "not-a-sha")
    assert code == 2 and doc["error"]["code"] == "usage"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "a", "version": "1", "files": [
        {"path": "../etc/passwd", "sha256": "ab" * 32, "size": 1}]}))
    code, doc = agent(device, "app", "stage", str(bad))
    assert code == 2 and "files[0].path" in doc["error"]["message"], doc
    assert not (device / "var/lib/fleet/apps/a").exists()


def test_stage_refuses_missing_blobs_and_links_present_ones(device, tmp_path):
    app = tree(tmp_path, "a1", {"graphs/a/graph.json": b"{}", "model.onnx": b"m" * 5000})
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(release_of(app, "a", "1.0.0")))
    code, doc = agent(device, "app", "stage", str(manifest))
    assert code == 1 and doc["error"]["code"] == "missing-blobs", doc
    status = deploy(device, app, "a", "1.0.0", tmp_path)
    staged = device / "var/lib/fleet/apps/a/versions/1.0.0/model.onnx"
    blob = BlobStore(Layout(device)).path(sha256(b"m" * 5000))
    assert staged.stat().st_ino == blob.stat().st_ino  # a hard link, not a copy
    assert status["current"] == "1.0.0"


def test_a_code_only_version_sends_only_the_changed_blob(device, tmp_path):
    model = b"w" * 100_000
    deploy(device, tree(tmp_path, "v1", {"code.py": b"v = 1", "model.onnx": model}),
           "a", "1.0.0", tmp_path)
    v2 = tree(tmp_path, "v2", {"code.py": b"v = 2", "model.onnx": model})
    shas = [f["sha256"] for f in release_of(v2, "a", "2.0.0")["files"]]
    assert agent(device, "blobs", "have", *shas)[1]["missing"] == [sha256(b"v = 2")]


def test_keep_versions_and_gc_collect_what_no_version_needs(device, tmp_path):
    (device / "etc/fleet/apps.json").write_text(json.dumps({"keep_versions": 2}))
    for n in (1, 2, 3):
        deploy(device, tree(tmp_path, f"v{n}", {"code.py": f"v = {n}".encode()}),
               "a", f"{n}.0.0", tmp_path)
    status = app_status(device, "a")
    assert status["versions"] == ["2.0.0", "3.0.0"] and status["previous"] == "2.0.0"
    code, doc = agent(device, "blobs", "gc", "--grace", "0")
    assert code == 0 and doc["removed"] == [sha256(b"v = 1")], doc
    code, doc = agent(device, "app", "rollback", "a")
    assert code == 0 and doc["app"]["current"] == "2.0.0" and doc["app"]["committed"] == "2.0.0"


def test_deploying_one_app_leaves_another_untouched(device, tmp_path):
    deploy(device, tree(tmp_path, "a", {"code.py": b"a"}), "a", "1.0.0", tmp_path)
    a_root = device / "var/lib/fleet/apps/a"
    before = {p: p.stat().st_mtime_ns for p in a_root.rglob("*")}
    deploy(device, tree(tmp_path, "b", {"code.py": b"b"}), "b", "1.0.0", tmp_path)
    deploy(device, tree(tmp_path, "b2", {"code.py": b"b2"}), "b", "2.0.0", tmp_path)
    assert {p: p.stat().st_mtime_ns for p in a_root.rglob("*")} == before
    assert agent(device, "app", "remove", "b")[0] == 0
    assert [a["name"] for a in agent(device, "app", "list")[1]["apps"]] == ["a"]
    assert app_status(device, "a")["current"] == "1.0.0"
