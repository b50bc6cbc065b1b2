"""fleet ota install against the lab: real sshd, real agent, real reboots (the lab's boot logic).

Every bad case leaves the device on its version and healthy, with a clear reason.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_bundle import default_files, make_bundle, new_key
from labkit import CALM_HEALTH, run_cli, start_lab

from fleet import firmware, ota
from fleet import inventory as inv
from fleet.lab import Lab
from fleet.project import Project
from fleet.transport import OPENSSH_MIN_BYTES

REPO = Path(__file__).resolve().parents[1]
SECRET = "correct-horse-battery"


@pytest.fixture(scope="module")
def ota_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A lab whose devices trust the project's release key (copied at `lab up`)."""
    root = tmp_path_factory.mktemp("ota")
    (root / "fleet.yaml").write_text(CALM_HEALTH)
    shutil.copytree(REPO / "firmware", root / "firmware")
    firmware.keygen(Project.locate(root), passphrase=SECRET.encode())
    lab = start_lab(root, 1, 3)
    yield lab
    lab.down()


def build(lab: Lab, recipe: str, **edits: str) -> Path:
    path = lab.project.firmware / recipe
    if edits:
        text = path.read_text()
        for old, new in edits.items():
            text = text.replace(old, new)
        path = lab.project.firmware / f"edited-{len(os.listdir(lab.project.firmware))}.yaml"
        path.write_text(text)
    return firmware.build(lab.project, path, passphrase=SECRET.encode()).path


def install(lab: Lab, device: str, bundle: Path, **kw):
    nr = inv.select(lab.project, inv.Selection.of("lab", limit=device))
    try:
        result = nr.run(task=ota.install_bundle, bundle_path=bundle, project=lab.project, **kw)
    finally:
        nr.close_connections(on_failed=True)
    return result[device][0]


def version(lab: Lab, device: str) -> str:
    from fleet_runtime import slots

    return slots.software_version(lab.layout(device))


def healthy(lab: Lab, device: str) -> dict:
    res = run_cli(lab.project.root, "health", "-i", "lab", "--limit", device, "--json")
    report = json.loads(res.stdout)["devices"][0]
    assert report["verdict"] == "healthy", report
    return report


def test_upgrade_then_a_broken_bundle_is_rolled_back(ota_lab):
    """The issue's must-show: upgrade with `fleet ota install`, then automatic rollback."""
    good = build(ota_lab, "lab-1.1.0.yaml")
    res = run_cli(ota_lab.project.root, "ota", "install", "berlin-01", str(good), "-i", "lab",
                  "--json")
    assert res.exit_code == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert (report["before"], report["after"], report["changed"]) == ("1.0.0", "1.1.0", True)
    assert [s["step"] for s in report["steps"]] == list(ota.STEPS)
    assert healthy(ota_lab, "berlin-01")["software"] == "1.1.0"

    broken = build(ota_lab, "lab-1.2.0-broken.yaml")
    res = run_cli(ota_lab.project.root, "ota", "install", "berlin-01", str(broken), "-i", "lab")
    assert res.exit_code == 1
    assert "rolled back to 1.1.0" in res.stderr and "self-test failed" in res.stderr
    assert version(ota_lab, "berlin-01") == "1.1.0"
    assert healthy(ota_lab, "berlin-01")["software"] == "1.1.0"


def test_the_result_carries_changed_failed_and_a_diff(ota_lab):
    broken = build(ota_lab, "lab-1.2.0-broken.yaml")
    result = install(ota_lab, "berlin-03", broken)
    assert result.failed and result.changed
    assert result.diff == "software: 1.0.0 -> 1.2.0 -> 1.0.0 (rolled back)"
    assert result.result["rolled_back"] and "self-test failed" in result.result["reason"]
    steps = [(s["step"], s["ok"]) for s in result.result["steps"]]
    assert ("verify", False) in steps and steps[-3:] == [("rollback", True), ("reboot", True),
                                                         ("verify", True)]
    state = ota_lab.layout("berlin-03")
    from fleet_runtime import slots

    assert slots.read_state(state)["state"] == "idle" and slots.problems(state) == []


def test_current_version_is_no_change_and_dry_run_changes_nothing(ota_lab):
    good = build(ota_lab, "lab-1.1.0.yaml")
    if version(ota_lab, "berlin-01") != "1.1.0":
        assert not install(ota_lab, "berlin-01", good).failed
    again = install(ota_lab, "berlin-01", good)
    assert (again.changed, again.failed) == (False, False)
    dry = install(ota_lab, "berlin-02", good, dry_run=True)
    assert dry.changed and not dry.failed and dry.diff == "software: 1.0.0 -> 1.1.0"
    assert version(ota_lab, "berlin-02") == "1.0.0"
    assert [s["step"] for s in dry.result["steps"]] == ["check"]


def _refused(lab: Lab, bundle: Path, step: str, words: str) -> None:
    before = version(lab, "berlin-02")
    result = install(lab, "berlin-02", bundle)
    assert result.failed and not result.changed, result.result
    assert result.result["reason"].startswith(step) or step == "check", result.result["reason"]
    assert words in result.result["reason"], result.result["reason"]
    assert [s["ok"] for s in result.result["steps"]][-1] is False
    assert version(lab, "berlin-02") == before
    healthy(lab, "berlin-02")


def test_bundle_for_other_hardware_is_refused_before_upload(ota_lab):
    other = build(ota_lab, "lab-1.1.0.yaml", **{
        "hardware: [jetson-xavier-nx, jetson-orin-nano, jetson-orin-agx]": "hardware: [x86-box]"})
    _refused(ota_lab, other, "check", "wrong-hardware")
    steps = install(ota_lab, "berlin-02", other).result["steps"]
    assert not any(s["step"] == "upload" for s in steps)


def test_downgrade_without_permit_is_refused(ota_lab):
    old = build(ota_lab, "lab-1.1.0.yaml", **{"version: 1.1.0": "version: 0.9.0",
                                               "min_version: 1.0.0": ""})
    _refused(ota_lab, old, "check", "downgrade")


def test_bundle_signed_by_an_untrusted_key_is_refused_by_the_device(ota_lab, tmp_path):
    rogue = tmp_path / "rogue.bundle"
    files = dict(default_files("6.6.6"), **{"opt/big.bin": os.urandom(8 << 20)})
    # big enough that the device refuses it long before the controller has sent it all
    rogue.write_bytes(make_bundle(new_key(), files, name="edgefleet-os", version="6.6.6"))
    _refused(ota_lab, rogue, "install", "untrusted-key")


def test_tampered_bundle_is_refused_by_the_device(ota_lab, tmp_path):
    data = bytearray(build(ota_lab, "lab-1.1.0.yaml").read_bytes())
    data[data.index(b"threshold")] ^= 1
    tampered = tmp_path / "tampered.bundle"
    tampered.write_bytes(bytes(data))
    _refused(ota_lab, tampered, "install", "hash-mismatch")


def test_disk_full_fails_the_install_and_keeps_the_version(ota_lab):
    good = build(ota_lab, "lab-1.1.0.yaml")
    ota_lab.fault("berlin-02", "disk-full")
    try:
        result = install(ota_lab, "berlin-02", good)
    finally:
        ota_lab.fault("berlin-02", "clear")
    assert result.failed and "No space left" in result.result["reason"]
    assert version(ota_lab, "berlin-02") == "1.0.0"
    healthy(ota_lab, "berlin-02")


class _LinkDrop(Exception):
    pass


def test_interrupted_upload_resumes(ota_lab, tmp_path):
    payload = ota_lab.project.firmware / "lab-image/opt/edgefleet/models/big.bin"
    # over OPENSSH_MIN_BYTES: the stream goes through the system ssh when it is installed
    payload.write_bytes(os.urandom(OPENSSH_MIN_BYTES + (2 << 20)))
    try:
        big = build(ota_lab, "lab-1.1.0.yaml", **{"version: 1.1.0": "version: 1.1.1"})
    finally:
        payload.unlink()
    staging = ota_lab.layout("berlin-02").staging

    def drop_midway(device: str, step: str, fields: dict) -> None:
        """The link drops once the device holds at least 1 MiB of the bundle."""
        kept = sum(p.stat().st_size for p in staging.glob("*.part"))
        if step == "install" and "done" in fields and kept >= (1 << 20):
            raise _LinkDrop("link dropped")

    cut = install(ota_lab, "berlin-02", big, progress=drop_midway)
    assert cut.failed and cut.result["reason"].startswith("install")
    assert "link dropped" in cut.result["reason"]
    assert version(ota_lab, "berlin-02") == "1.0.0"
    healthy(ota_lab, "berlin-02")
    done = install(ota_lab, "berlin-02", big)
    assert not done.failed, done.result["reason"]
    assert [s["step"] for s in done.result["steps"]][:3] == ["check", "upload", "install"]
    upload = done.result["steps"][1]
    assert upload["detail"]["resumed_from"] >= (1 << 20)
    assert version(ota_lab, "berlin-02") == "1.1.1"
    assert not list(ota_lab.layout("berlin-02").staging.iterdir())  # upload removed once installed


def _not_counted_updated(lab: Lab, result, before: str, why: str) -> None:
    """The device runs `before` again, committed and consistent, and the result says so."""
    from fleet_runtime import slots

    assert result.failed, result.result
    assert why in result.result["reason"], result.result["reason"]
    assert result.result["after"] == before and version(lab, "berlin-03") == before
    layout = lab.layout("berlin-03")
    assert slots.read_state(layout)["state"] == "idle" and slots.problems(layout) == []


def test_a_device_that_falls_back_by_itself_is_not_counted_updated(ota_lab):
    """The device reboots (its boot counter moves) but comes back on its old slot: only its
    own post-reboot report of the target version counts, never the reboot itself."""
    newer = build(ota_lab, "lab-1.1.0.yaml", **{"version: 1.1.0": "version: 9.0.0"})
    before = version(ota_lab, "berlin-03")
    res = run_cli(ota_lab.project.root, "lab", "fault", "berlin-03", "fallback")
    assert res.exit_code == 0 and ota_lab.faults("berlin-03") == ["fallback"]
    result = install(ota_lab, "berlin-03", newer)
    _not_counted_updated(ota_lab, result, before,
                         f"reports version {before}, expected 9.0.0 (the device fell back)")
    assert ota_lab.faults("berlin-03") == []  # one reboot only
    assert ("commit", True) not in [(s["step"], s["ok"]) for s in result.result["steps"]]


def test_a_reboot_that_never_happened_is_not_counted_updated(ota_lab):
    newer = build(ota_lab, "lab-1.1.0.yaml", **{"version: 1.1.0": "version: 9.0.0"})
    before = version(ota_lab, "berlin-03")
    ota_lab.fault("berlin-03", "no-reboot")
    result = install(ota_lab, "berlin-03", newer)
    _not_counted_updated(ota_lab, result, before, "the device answered but did not boot")
    assert f"rolled back to {before}" in result.result["reason"]


_RECORDING_AGENT = """#!{python}
import json, sys
with open({log!r}, "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
if {old!r} and sys.argv[1:2] == ["health"] and "--slots" in sys.argv:
    print(json.dumps({{"ok": False, "protocol": 1, "error": {{"code": "usage",
          "message": "fleet-agent: unrecognized arguments: --slots"}}}}))
    sys.exit(2)
from fleet_runtime.agent.cli import main
sys.exit(main())
"""


@pytest.mark.parametrize("old_agent", [False, True])
def test_verify_asks_slots_and_health_in_one_call_and_still_speaks_to_older_agents(
        ota_lab, tmp_path, old_agent):
    """#19: after the reboot one `health --slots` answers the verify step (one interpreter
    start on the device, not two); an agent without the flag is asked both ways."""
    target = "1.7.1" if old_agent else "1.7.0"
    bundle = build(ota_lab, "lab-1.1.0.yaml", **{"version: 1.1.0": f"version: {target}"})
    log, wrapper = tmp_path / "calls.jsonl", tmp_path / "agent"
    wrapper.write_text(_RECORDING_AGENT.format(python=sys.executable, log=str(log),
                                               old=old_agent))
    wrapper.chmod(0o755)
    nr = inv.select(ota_lab.project, inv.Selection.of("lab", limit="berlin-01"))
    nr.inventory.hosts["berlin-01"].data["agent"] = str(wrapper)
    try:
        result = nr.run(task=ota.install_bundle, bundle_path=bundle, project=ota_lab.project)
    finally:
        nr.close_connections(on_failed=True)
    assert not result["berlin-01"][0].failed, result["berlin-01"][0].result["reason"]
    assert version(ota_lab, "berlin-01") == target
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    after = [c[0] for c in calls[[c[0] for c in calls].index("install") + 1:]]
    if old_agent:
        assert sorted(after) == ["commit", "health", "health", "slots"], calls
    else:
        assert after == ["health", "commit"] and "--slots" in calls[-2], calls
