"""`fleet-agent batch`: several commands in one agent process, answered in order, stopping at
the first failure (an application deploy's facts and its switch each cost one process start)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from fleet_runtime.agent.cli import main
from fleet_runtime.apps.blobs import BlobStore
from fleet_runtime.layout import Layout

X, Y = b"blob x\n", b"blob y, never sent\n"
SX, SY = hashlib.sha256(X).hexdigest(), hashlib.sha256(Y).hexdigest()


def put(data: bytes) -> dict[str, Any]:
    sha = hashlib.sha256(data).hexdigest()
    return {"argv": ["blobs", "put", sha, "--size", str(len(data))],
            "stdin_b64": base64.b64encode(data).decode()}


def batch(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], root: Path,
          calls: list[dict[str, Any]]) -> tuple[int, dict[str, Any], str]:
    monkeypatch.setenv("FLEET_ROOT", str(root))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(
        json.dumps({"calls": calls}).encode())))
    capsys.readouterr()
    code = main(["batch"])
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 1, out  # one answer, whatever the calls printed
    return code, json.loads(lines[0]), err


def test_calls_run_in_order_each_with_its_own_stdin_and_the_first_failure_ends_the_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, err = batch(monkeypatch, capsys, tmp_path, [
        put(X), {"argv": ["blobs", "have", SX, SY]},
        {"argv": ["info"]},  # fails: this root has no device identity
        put(Y)])
    assert code == 0 and doc["ok"], doc
    put_x, have, info = doc["answers"]  # the call after the failure did not run
    assert (put_x["ok"], put_x["sha256"], put_x["stored"]) == (True, SX, True)
    assert (have["have"], have["missing"]) == ([SX], [SY])
    assert (info["ok"], info["error"]["code"]) == (False, "not-provisioned")
    store = BlobStore(Layout(tmp_path))
    assert store.has(SX) and not store.has(SY)
    started = [json.loads(line)["progress"] for line in err.splitlines()]
    assert [p["index"] for p in started] == [0, 1, 2]


@pytest.mark.parametrize("argv", [["app", "run", "color"], ["daemon"], ["batch"]])
def test_a_command_that_never_returns_or_a_nested_batch_is_refused_before_anything_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        argv: list[str]) -> None:
    code, doc, _ = batch(monkeypatch, capsys, tmp_path, [put(X), {"argv": argv}])
    assert code == 2 and doc["error"]["code"] == "usage", doc
    assert "cannot run in a batch" in doc["error"]["message"]
    assert not BlobStore(Layout(tmp_path)).has(SX)


def test_a_call_with_bad_arguments_answers_usage_in_its_place(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, _ = batch(monkeypatch, capsys, tmp_path, [
        {"argv": ["blobs", "have", "not-a-sha"]}, put(X)])
    assert code == 0 and len(doc["answers"]) == 1, doc
    assert doc["answers"][0]["error"]["code"] == "usage"
    assert "not-a-sha" in doc["answers"][0]["error"]["message"]
    assert not BlobStore(Layout(tmp_path)).has(SX)
