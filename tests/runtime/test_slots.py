"""The A/B state machine: the flow, every refusal, the trial counter.

Power loss (the agent killed in every step) is tested in test_power_loss.py.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from fleet_runtime import bundle, slots
from fleet_runtime.layout import Layout, atomic_write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures_bundle import (  # noqa: E402
    default_files,
    make_bundle,
    make_device,
    make_manifest,
    new_key,
    raw_bundle,
)

KEY = new_key()
AGENT = str(Path(sys.executable).parent / "fleet-agent")


@pytest.fixture()
def device(tmp_path) -> Layout:
    return make_device(tmp_path / "dev", KEY)


def tree_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): bundle.sha256_file(p)
            for p in sorted(path.rglob("*")) if p.is_file()}


def upgrade(layout: Layout, version: str = "1.1.0", **kw) -> None:
    slots.install(layout, io.BytesIO(make_bundle(KEY, version=version, **kw)))
    slots.activate(layout)
    slots.boot(layout)
    slots.commit(layout)


# ---------------------------------------------------------------------------- the flow


def test_install_activate_boot_commit(device):
    before = tree_digest(device.slot("a"))
    data = make_bundle(KEY)
    out = slots.install(device, io.BytesIO(data))
    assert out == {"slot": "b", "name": "lab-image", "version": "1.1.0",
                   "bytes": out["bytes"], "files": 3, "state": "installed",
                   "bundle_bytes": len(data)}
    assert slots.software_version(device) == "1.0.0"  # nothing changes before a reboot
    assert slots.activate(device)["trials_left"] == 3
    booted = slots.boot(device)
    assert (booted["event"], booted["slot"], booted["trials_left"]) == ("boot-trial", "b", 2)
    assert slots.software_version(device) == "1.1.0"
    assert slots.commit(device)["changed"] is True
    assert slots.commit(device)["changed"] is False  # idempotent
    state = slots.read_state(device)
    assert (state["state"], state["committed_slot"], state["pending"]) == ("idle", "b", None)
    assert state["slots"]["a"]["status"] == "previous"
    assert slots.problems(device) == [] and slots.verify_slot(device, "b") == []
    assert tree_digest(device.slot("a")) == before


def test_next_install_goes_to_the_other_slot(device):
    upgrade(device, "1.1.0")
    assert slots.install(device, io.BytesIO(make_bundle(KEY, version="1.2.0")))["slot"] == "a"


def test_trials_run_out_and_the_device_falls_back(device):
    slots.install(device, io.BytesIO(make_bundle(KEY)))
    slots.activate(device, trials=2)
    chain = [slots.boot(device)["event"] for _ in range(4)]
    assert chain == ["boot-trial", "boot-trial", "fallback", "boot"]
    state = slots.read_state(device)
    assert (state["active"], slots.software_version(device)) == ("a", "1.0.0")
    assert state["last_error"]["code"] == "fallback"
    assert state["slots"]["b"]["status"] == "failed"
    assert slots.problems(device) == []


def test_rollback_from_trial_returns_to_the_committed_slot(device):
    slots.install(device, io.BytesIO(make_bundle(KEY)))
    slots.activate(device)
    slots.boot(device)
    out = slots.rollback(device, "health check failed: disk")
    assert (out["slot"], out["version"], out["dropped"]) == ("a", "1.0.0", "b")
    assert slots.boot(device)["slot"] == "a"
    assert slots.read_state(device)["slots"]["b"]["reason"] == "health check failed: disk"
    assert slots.rollback(device)["changed"] is False


def test_rollback_cancels_a_pending_activation(device):
    slots.install(device, io.BytesIO(make_bundle(KEY)))
    slots.activate(device)
    slots.rollback(device)
    assert slots.boot(device)["slot"] == "a" and slots.problems(device) == []


@pytest.mark.parametrize("verb", ["activate", "commit-in-installed"])
def test_verbs_outside_the_table_are_refused(device, verb):
    if verb == "commit-in-installed":
        slots.install(device, io.BytesIO(make_bundle(KEY)))
    with pytest.raises(slots.SlotError) as info:
        slots.activate(device) if verb == "activate" else slots.commit(device)
    assert info.value.code == "wrong-state"


def test_install_is_refused_while_a_slot_is_on_trial(device):
    slots.install(device, io.BytesIO(make_bundle(KEY)))
    slots.activate(device)
    slots.boot(device)
    with pytest.raises(slots.SlotError, match="on trial; commit or rollback"):
        slots.install(device, io.BytesIO(make_bundle(KEY, version="1.2.0")))


def test_transition_table_is_closed():
    """Every state can be left, and boot is defined in every state (a device always boots)."""
    for state in slots.State:
        events = {e for (s, e) in slots.TRANSITIONS if s is state}
        assert events, state
        assert events & {slots.Event.BOOT, slots.Event.BOOT_TRIAL, slots.Event.DISCARD}, state


# ---------------------------------------------------------------------------- hooks and keys


SELFTEST_FAIL = b"#!/bin/sh\necho 'model file failed to load' >&2\nexit 3\n"


def test_failing_selftest_blocks_commit_and_rollback_restores(device):
    files = {**default_files("1.1.0"), "bin/selftest": SELFTEST_FAIL}
    slots.install(device, io.BytesIO(make_bundle(KEY, files, modes={"bin/selftest": 0o755},
                                                 hooks={"selftest": "bin/selftest"})))
    slots.activate(device)
    booted = slots.boot(device)
    assert booted["selftest"]["ok"] is False
    assert "model file failed to load" in booted["selftest"]["reason"]
    with pytest.raises(slots.SlotError) as info:
        slots.commit(device)
    assert info.value.code == "selftest-failed"
    slots.rollback(device, "selftest failed")
    assert slots.boot(device)["selftest"]["ok"] is True
    assert slots.software_version(device) == "1.0.0"


def test_failing_post_install_hook_fails_the_install(device):
    files = {**default_files("1.1.0"), "bin/post": SELFTEST_FAIL}
    data = make_bundle(KEY, files, modes={"bin/post": 0o755}, hooks={"post-install": "bin/post"})
    with pytest.raises(slots.SlotError) as info:
        slots.install(device, io.BytesIO(data))
    assert info.value.code == "hook-failed"
    assert slots.read_state(device)["state"] == "idle" and slots.problems(device) == []


def test_commit_installs_keys_the_bundle_adds(device):
    new = new_key()
    pem = bundle.public_pem(new.public_key()).decode()
    kid = bundle.key_id(new.public_key())
    upgrade(device, add_keys={kid: pem})
    assert (device.release_keys / f"{kid}.pub").exists()
    # the next bundle can be signed by the new key alone
    slots.install(device, io.BytesIO(make_bundle(new, version="1.2.0")))


# ---------------------------------------------------------------------------- bad input


def _hostile(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> bytes:
    manifest = make_manifest(KEY, {"ok.txt": b"hello"})
    raw, sig = bundle.sign_manifest(manifest, KEY)
    return raw_bundle(raw, sig, [(name, b"hello" if kind == tarfile.REGTYPE else b"", kind, link)])


def _tampered_payload() -> bytes:
    data = bytearray(make_bundle(KEY))
    data[data.index(b"VERSION_ID")] ^= 1
    return bytes(data)


def _untrusted_signature() -> bytes:
    raw = make_manifest(KEY, {"ok.txt": b"hello"}).encode()
    return raw_bundle(raw, new_key().sign(raw), [])


BAD = {
    "truncated": (lambda: make_bundle(KEY)[:9000], "truncated"),
    "tampered-payload": (_tampered_payload, "hash-mismatch"),
    "tampered-manifest": (lambda: make_bundle(KEY).replace(b'"1.1.0"', b'"1.9.0"', 1),
                          "bad-signature"),
    "unknown-key": (lambda: make_bundle(new_key()), "untrusted-key"),
    "untrusted-signature": (_untrusted_signature, "bad-signature"),
    "dotdot": (lambda: _hostile("payload/../ok.txt"), "unsafe-path"),
    "absolute": (lambda: _hostile("/etc/passwd"), "unexpected-member"),
    "symlink": (lambda: _hostile("payload/ok.txt", tarfile.SYMTYPE, "/etc/shadow"),
                "unsafe-member"),
    "hardlink": (lambda: _hostile("payload/ok.txt", tarfile.LNKTYPE, "etc/passwd"),
                 "unsafe-member"),
    "device-file": (lambda: _hostile("payload/ok.txt", tarfile.CHRTYPE), "unsafe-member"),
    "other-hardware": (lambda: make_bundle(KEY, hardware=["jetson-orin-agx"]), "wrong-hardware"),
    "other-arch": (lambda: make_bundle(KEY, arch=["x86_64"]), "wrong-arch"),
    "downgrade": (lambda: make_bundle(KEY, version="0.9.0", min_version=None), "downgrade"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_bundle_leaves_the_active_slot_untouched(device, case):
    make, code = BAD[case]
    state_before = slots.read_state(device)
    image_before = tree_digest(device.slot("a"))
    with pytest.raises((bundle.BundleError, slots.SlotError)) as info:
        slots.install(device, io.BytesIO(make()))
    assert info.value.code == code
    assert tree_digest(device.slot("a")) == image_before
    after = slots.read_state(device)
    assert (after["active"], after["committed_slot"]) == ("a", "a")
    assert after["state"] == "idle" and slots.problems(device) == []
    if code not in {"truncated", "hash-mismatch", "unsafe-path", "unexpected-member",
                    "unsafe-member"}:  # refused before a byte was written: boot.json untouched
        assert after == state_before
    assert slots.boot(device)["slot"] == "a" and slots.software_version(device) == "1.0.0"


def test_downgrade_with_a_signed_permit_is_installed(device):
    data = make_bundle(KEY, version="0.9.0", min_version=None,
                       downgrade_permit={"version": "0.9.0", "reason": "1.0.0 regressed"})
    assert slots.install(device, io.BytesIO(data))["version"] == "0.9.0"


class _FillsDiskMidway(io.RawIOBase):
    """Turns the lab's disk-full fault on once half the bundle has been read."""

    def __init__(self, data: bytes, layout: Layout) -> None:
        self.data, self.pos, self.layout = data, 0, layout

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self.pos > len(self.data) // 2:
            atomic_write_json(self.layout.lab_faults, {"disk-full": True})
        n = min(len(buf), 4096, len(self.data) - self.pos)
        buf[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


def test_disk_full_while_writing_fails_cleanly(device):
    files = {f"opt/edgefleet/models/m{i}.bin": os.urandom(512 << 10) for i in range(8)}
    stream = io.BufferedReader(_FillsDiskMidway(make_bundle(KEY, files), device))
    with pytest.raises(OSError) as info:
        slots.install(device, stream)
    assert "No space left" in str(info.value)
    state = slots.read_state(device)
    assert state["state"] == "idle" and state["slots"]["b"]["status"] == "failed"
    assert state["last_error"]["code"] == "os-error"
    assert not slots.staging_dir(device, "b").exists()
    device.lab_faults.unlink()
    assert slots.boot(device)["slot"] == "a" and slots.problems(device) == []
    upgrade(device)  # and the next attempt works


# ---------------------------------------------------------------------------- the agent


def agent(layout: Layout, *args: str, stdin: bytes | None = None):
    proc = subprocess.run([AGENT, *args], input=stdin, capture_output=True,
                          env={**os.environ, "FLEET_ROOT": str(layout.root)}, timeout=60)
    return proc.returncode, json.loads(proc.stdout), proc.stderr.decode()


def test_agent_installs_from_stdin_with_progress(device):
    rc, out, err = agent(device, "install", "-", "--activate", "--trials", "2",
                         stdin=make_bundle(KEY))
    assert rc == 0 and out["ok"] and out["version"] == "1.1.0"
    assert out["activated"] == {"pending": "b", "trials_left": 2, "version": "1.1.0"}
    steps = [json.loads(line)["progress"]["step"] for line in err.splitlines()]
    assert steps[0] == "verify" and steps[-1] == "write"
    for args in (["boot"], ["commit"]):
        assert agent(device, *args)[0] == 0
    rc, out, _ = agent(device, "slots", "--json", "--verify")
    assert (out["active"], out["software"], out["verify"]) == ("b", "1.1.0", {"a": [], "b": []})


def test_agent_reports_a_refusal_as_one_error(device):
    rc, out, _ = agent(device, "install", "-", stdin=_tampered_payload())
    assert rc == 1 and out["error"]["code"] == "hash-mismatch"
    rc, out, _ = agent(device, "install", str(device.root / "nope.bundle"))
    assert rc == 1 and out["error"]["code"] == "not-found"
    rc, out, _ = agent(device, "reboot")
    assert rc == 1 and out["error"]["code"] == "lab-device"


def test_agent_keeps_a_cut_stream_for_resume_and_drops_a_refused_one(device):
    upload = device.staging / "u.bundle"
    data = make_bundle(KEY, dict(default_files("1.1.0"), big=os.urandom(300_000)))
    rc, out, _ = agent(device, "install", "-", "--save", str(upload), stdin=data[:150_000])
    assert rc == 1 and out["error"]["code"] == "truncated"
    assert (device.staging / "u.bundle.part").read_bytes() == data[:150_000]
    assert slots.read_state(device)["active"] == "a" and slots.problems(device) == []
    rc, out, _ = agent(device, "install", "-", "--save", str(upload), stdin=_tampered_payload())
    assert rc == 1 and out["error"]["code"] == "hash-mismatch"
    assert not (device.staging / "u.bundle.part").exists()
    rc, out, _ = agent(device, "install", "-", "--save", str(upload), stdin=data)
    assert rc == 0 and not (device.staging / "u.bundle.part").exists()
    rc, out, _ = agent(device, "install", "-", "--save", str(device.root / "x"), stdin=data)
    assert rc == 1 and out["error"]["code"] == "usage"


def test_agent_removes_an_installed_upload(device):
    upload = device.staging / "x.bundle"
    upload.write_bytes(make_bundle(KEY))
    assert agent(device, "install", str(upload), "--remove-after")[0] == 0
    assert not upload.exists()
