"""The deploy decision from recorded device answers (`info`, `app list`, `blobs have`):
one row per device state, each with what plan shows and what deploy then does."""

from __future__ import annotations

import hashlib
import json

import pytest
from fleet_runtime.appbundle import AppManifest
from fleet_runtime.bundle import FileEntry

from fleet.apps.decide import Target, decide_app, version_files
from fleet.facts import Blobs, DeployedApps, Info

CODE, MODEL = b"print('v2')\n", b"\0" * 5000
FILES = (FileEntry("graphs/a/graph.json", 10, hashlib.sha256(b"g").hexdigest()),
         FileEntry("packages/p/app.py", len(CODE), hashlib.sha256(CODE).hexdigest()),
         FileEntry("packages/m/model.onnx", len(MODEL), hashlib.sha256(MODEL).hexdigest()))
SHA = {f.path.rsplit("/", 1)[-1]: f.sha256 for f in FILES}


def manifest(version="2.0.0", min_runtime="0.1.0", platforms=("*",), files=FILES):
    return AppManifest("a", version, "k", "graphs/a/graph.json", min_runtime, platforms, (),
                       files)


def info(arch="aarch64", agent="0.1.0"):
    return Info.from_answer({"name": "d", "arch": arch, "software": "1.0.0",
                             "agent_version": agent})


def apps(**app):
    return DeployedApps.from_answer({"apps": [{"name": "a", **app}] if app else []})


def blobs(have=(), partial=None, free=10**9, reserve=1000):
    shas = [f.sha256 for f in FILES]
    return Blobs.from_answer({"have": list(have), "missing": [s for s in shas if s not in have],
                              "partial": partial or {}, "free_bytes": free,
                              "reserve_bytes": reserve})


def decide(target=None, device=None, deployed=None, stored=None):
    target = target or Target(manifest())
    device = device or info()
    files = version_files(target, device.arch or "")
    return decide_app(device, deployed or apps(), stored or blobs(), target, files)


def test_a_fresh_device_gets_every_blob():
    plan = decide()
    assert (plan.state, plan.send_bytes, len(plan.send)) == ("change", 10 + len(CODE) + 5000, 3)
    assert plan.free_after == 10**9 - plan.send_bytes and plan.current is None


def test_a_code_only_version_sends_the_code_blob_and_a_partial_counts_its_rest():
    plan = decide(deployed=apps(state="done", committed="1.0.0"),
                  stored=blobs(have=(SHA["graph.json"], SHA["model.onnx"])))
    assert (plan.send_bytes, plan.current) == (len(CODE), "1.0.0")
    plan = decide(stored=blobs(have=(SHA["graph.json"], SHA["app.py"]),
                               partial={SHA["model.onnx"]: 1200}))
    assert plan.send_bytes == 5000 - 1200 and plan.send[0][1] == 1200


@pytest.mark.parametrize(("kwargs", "state", "words"), [
    ({"deployed": apps(state="done", committed="2.0.0")}, "current", "already runs 2.0.0"),
    ({"stored": blobs(free=5000)}, "refused", "too little disk"),
    ({"device": info(arch="riscv64")}, "refused", "unknown platform riscv64"),
    ({"target": Target(manifest(min_runtime="9.0.0"))}, "refused", "needs runtime 9.0.0"),
    ({"target": Target(manifest(), refusal="camera door belongs to berlin-02")}, "refused",
     "camera door belongs to berlin-02"),
    ({"deployed": apps(state="checking", target="3.0.0", committed="1.0.0")}, "refused",
     "a deploy of a 3.0.0 is in progress"),
])
def test_states_that_need_nothing_or_are_refused(kwargs, state, words):
    plan = decide(**kwargs)
    assert plan.state == state and words in plan.reason, plan


def test_another_platform_is_refused_and_its_own_gets_its_variant():
    tagged = (*FILES, FileEntry("packages/p/lib/helper-linux-amd64.so", 4,
                                hashlib.sha256(b"elf!").hexdigest()))
    target = Target(manifest(platforms=("linux-amd64",), files=tagged))
    plan = decide(target=target)
    assert plan.state == "refused" and "not linux-arm64-v8" in plan.reason
    plan = decide(target=target, device=info(arch="x86_64"))
    assert plan.state == "change" and "packages/p/lib/helper.so" in \
        {f["path"] for f in plan.files}


def test_a_staged_target_is_continued_not_staged_again():
    for state in ("staged", "activating", "checking", "committing"):
        plan = decide(deployed=apps(state=state, target="2.0.0", committed="1.0.0"),
                      stored=blobs(have=[f.sha256 for f in FILES]))
        assert (plan.state, plan.resume_from, plan.send_bytes) == ("change", state, 0)
    plan = decide(deployed=apps(state="staged", target="1.5.0", committed="1.0.0"))
    assert (plan.state, plan.resume_from) == ("change", None)  # another version: restaged


def test_per_device_files_and_cameras_go_into_the_version():
    target = Target(manifest(), config_files={"override.json": b"{}"},
                    cameras={"camera_node": ["door", "yard"]})
    plan = decide(target=target)
    release = plan.release(target)
    assert {"path": "override.json", "sha256": hashlib.sha256(b"{}").hexdigest(),
            "size": 2} in release["files"]
    # registry camera names are bound by override.json through the device's sealed
    # cameras.json; only stream addresses travel in the release as --camera NODE=URI
    assert "cameras" not in release
    assert plan.send_bytes == 10 + len(CODE) + 5000 + 2
    uri = Target(manifest(), cameras={"camera_node": ["rtsp://10.0.0.7/s1"], "side": ["yard"]})
    assert decide(target=uri).release(uri)["cameras"] == {"camera_node": "rtsp://10.0.0.7/s1"}


def test_an_unreachable_bound_camera_refuses_unless_allowed():
    target, device = Target(manifest()), info()
    files = version_files(target, device.arch or "")
    probed = {"door": "REACHABLE", "yard": "TIMEOUT"}
    plan = decide_app(device, apps(), blobs(), target, files, probed)
    assert plan.state == "refused" and plan.reason.startswith("camera-unreachable: yard (TIMEOUT)")
    assert plan.row()["cameras"] == [{"name": "door", "status": "REACHABLE", "reachable": True},
                                     {"name": "yard", "status": "TIMEOUT", "reachable": False}]
    allowed = decide_app(device, apps(), blobs(), target, files, probed, allow_unreachable=True)
    assert allowed.state == "change"
    fine = decide_app(device, apps(), blobs(), target, files, {"door": "REACHABLE"})
    assert fine.state == "change" and fine.cameras == (("door", "REACHABLE"),)
    # a device already on the target is current, whatever its cameras say
    done = decide_app(device, apps(state="done", committed="2.0.0"), blobs(), target, files,
                      probed)
    assert done.state == "current"


def test_iot_jobs_refuses_a_device_whose_configuration_needs_its_own_files():
    """One shared job document carries the bundle: parameters set above the graph and
    registry camera bindings (with their sealed credentials) cannot ride in it; the graph's
    own values and stream URIs can."""
    defaults = json.dumps({"nodeGraphOverrides": {"nodes": [
        {"name": "label__value", "interface": "string", "value": "default"}],
        "nodeOverrides": [{"replace": "label", "with": [{"name": "label__value"}]}]}}).encode()
    device = info()

    def by_jobs(target):
        files = version_files(target, device.arch or "")
        return decide_app(device, apps(), blobs(), target, files, engine="iot-jobs",
                          device="berlin-01")

    bound = Target(manifest(), config_files={"override.json": defaults},
                   cameras={"camera_node": ["door"]})
    plan = by_jobs(bound)
    assert plan.state == "refused"
    assert plan.reason == ("per-device-config: iot-jobs cannot carry berlin-01's camera "
                           "bindings (camera_node); deploy over ssh")
    assert decide(target=bound).state == "change"  # over ssh the same device is fine
    night = Target(manifest(), config_files={"override.json": defaults},
                   set_nodes=("label", "draw"))
    assert by_jobs(night).reason == ("per-device-config: iot-jobs cannot carry berlin-01's "
                                     "node settings (draw, label); deploy over ssh")
    shared = Target(manifest(), config_files={"override.json": defaults},
                    cameras={"camera_node": ["synthetic:colors"]})
    assert by_jobs(shared).state == "change"
