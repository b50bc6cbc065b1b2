"""OtaWork.accept, the rollout's gate on what a device reported after its reboot.

The reports are real: `install_bundle` run on a lab device (OpenSSH sshd, the real
agent, the lab's boot logic). The variants take one piece of evidence out of a real
report, so each test fails when `accept` stops reading that piece.
"""

from __future__ import annotations

import copy

import pytest
from lab_rollouts import build, lab_project
from nornir.core.task import MultiResult, Result

from fleet import inventory as inv
from fleet import ota
from fleet.rollout.update import OtaWork


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """One real dry run and one real update of the same device, and the work that ran them."""
    lab = lab_project(tmp_path_factory.mktemp("accept"), 1, 1)
    try:
        bundle = build(lab)
        nr = inv.select(lab.project, inv.Selection.of("lab"))
        try:
            dry = nr.run(task=ota.install_bundle, bundle_path=bundle, project=lab.project,
                         dry_run=True)["berlin-01"]
            real = nr.run(task=ota.install_bundle, bundle_path=bundle,
                          project=lab.project)["berlin-01"]
        finally:
            nr.close_connections(on_failed=True)
        yield OtaWork.for_bundle(lab.project, bundle), dry, real
    finally:
        lab.down()


def edited(multi: MultiResult, edit) -> MultiResult:
    """`multi` with its report changed by `edit(report)`; still changed and not failed."""
    report = copy.deepcopy(multi[0].result)
    edit(report)
    out = MultiResult(multi.name)
    out.append(Result(multi[0].host, result=report, changed=True, failed=False))
    return out


def drop(step):
    return lambda report: report.update(
        steps=[s for s in report["steps"] if s["step"] != step])


def verify_saw(key, value):
    def edit(report):
        for step in report["steps"]:
            if step["step"] == "verify":
                step["detail"][key] = value
    return edit


def test_a_real_update_with_its_post_reboot_report_is_accepted(reports):
    work, _dry, real = reports
    assert not real.failed and real.changed
    assert work.accept(real) is None


def test_a_changed_result_without_a_post_reboot_report_is_refused(reports):
    work, dry, _real = reports
    assert dry.changed and not dry.failed  # a real result: the device was never rebooted
    assert work.accept(dry) == "no post-reboot report of 1.1.0 (saw None)"


@pytest.mark.parametrize("edit,reason", [
    (drop("verify"), "no post-reboot report of 1.1.0 (saw None)"),
    (verify_saw("software", "1.0.0"), "no post-reboot report of 1.1.0 (saw 1.0.0)"),
    (verify_saw("verdict", "failing"), "health failing after the reboot"),
    (drop("commit"), "the commit did not report 1.1.0"),
], ids=["no-verify", "old-version", "health-failing", "no-commit"])
def test_a_report_missing_its_evidence_is_refused(reports, edit, reason):
    work, _dry, real = reports
    assert work.accept(edited(real, edit)) == reason
