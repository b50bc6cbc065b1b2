"""The must-show: `--check` on playbooks/monthly-update.yaml changes nothing on any device
(slot state and files hashed before and after), and its `--diff` names the very devices
and versions the real run then changes. The application play is left out (--skip-tags
app): the lab devices run no application here."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from labkit import CALM_HEALTH, run_cli, start_lab
from opkit import device_hash

from fleet import firmware
from fleet.lab import Lab
from fleet.project import Project

REPO = Path(__file__).resolve().parents[2]
SECRET = "monthly-release-passphrase"
DEVICES = ["berlin-01", "berlin-02", "berlin-03", "berlin-04"]
INSTALL = "install the OS bundle (reboot, verify, commit or roll back)"


@pytest.fixture
def monthly_lab(tmp_path: Path) -> Iterator[Lab]:
    (tmp_path / "fleet.yaml").write_text(CALM_HEALTH)
    shutil.copytree(REPO / "firmware", tmp_path / "firmware")
    firmware.keygen(Project.locate(tmp_path), passphrase=SECRET.encode())
    lab = start_lab(tmp_path, 1, len(DEVICES))
    yield lab
    lab.down()


def play(lab: Lab, bundle: Path, *flags: str) -> tuple[int, list[dict]]:
    res = run_cli(lab.project.root, "play", str(REPO / "playbooks/monthly-update.yaml"),
                  "-i", "lab", "--skip-tags", "app", "-e", f"bundle={bundle}", "--json", *flags)
    events = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    return res.exit_code, events


def software_diffs(events: list[dict]) -> dict[str, dict]:
    return {e["device"]: e["diff"]["software"] for e in events
            if e.get("event") == "task_done" and e.get("name") == INSTALL and e.get("diff")}


def test_check_changes_nothing_and_its_diff_is_what_the_real_run_changes(monthly_lab):
    lab = monthly_lab
    bundle = firmware.build(lab.project, lab.project.firmware / "lab-1.1.0.yaml",
                            passphrase=SECRET.encode()).path
    before = {d: device_hash(lab, d) for d in DEVICES}
    code, checked = play(lab, bundle, "--check", "--diff")
    assert code == 0, checked[-1]
    assert {d: device_hash(lab, d) for d in DEVICES} == before
    predicted = software_diffs(checked)
    assert predicted == {d: {"before": "1.0.0", "after": "1.1.0"} for d in DEVICES}

    code, ran = play(lab, bundle, "--diff")
    assert code == 0, ran[-1]
    assert software_diffs(ran) == predicted
    assert all(device_hash(lab, d) != before[d] for d in DEVICES)
    batches = [e["devices"] for e in ran if e.get("event") == "batch_started"
               and e.get("play") == 1]
    assert len(batches[0]) == 1 and len(batches) > 1  # the canary first, then the others
    assert sorted(d for b in batches for d in b) == DEVICES

    code, again = play(lab, bundle, "--check", "--diff")
    assert code == 0 and software_diffs(again) == {}
