"""OtaWork.accept, the rollout's health gate, on the reports install_bundle writes.

A device counts as updated only on its own post-reboot report of the target version
and health, and on a commit that answered with that version (README, "Rolling rollouts").
These are the reports a lab would produce, written out so every way a report can fall
short is shown; the lab tests run the same gate on real devices.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from nornir.core.task import MultiResult, Result

from fleet.rollout.update import OtaWork

TARGET = "1.1.0"


def work() -> OtaWork:
    return OtaWork(project=None, bundle=Path("edgefleet-os-1.1.0.bundle"),  # type: ignore[arg-type]
                   version=TARGET, name="edgefleet-os")


def step(name: str, detail: Any, ok: bool = True) -> dict[str, Any]:
    return {"step": name, "ok": ok, "seconds": 0.1, "detail": detail}


def report(before: str = "1.0.0", **steps: dict[str, Any] | None) -> dict[str, Any]:
    chosen = {"verify": step("verify", {"software": TARGET, "verdict": "healthy", "selftest": True}),
              "commit": step("commit", {"slot": "b", "version": TARGET})}
    chosen.update(steps)
    return {"device": "berlin-01", "target": TARGET, "before": before, "after": TARGET,
            "rolled_back": False, "reason": "",
            "steps": [s for s in chosen.values() if s is not None]}


def judged(doc: Any, changed: bool = True) -> str | None:
    """The gate's answer on install_bundle's MultiResult: the task's own result first, then
    its steps' results (Nornir appends subtasks; the last is the commit's, unchanged). The
    report goes through JSON, as it does from a device, so no string is the gate's own."""
    multi = MultiResult("install_bundle")
    multi.append(Result(host=None, result=json.loads(json.dumps(doc)), changed=changed))
    multi.append(Result(host=None, result={"slot": "b", "version": TARGET}))
    return work().accept(multi)


def test_a_device_that_reported_the_target_after_the_reboot_and_committed_counts() -> None:
    assert judged(report()) is None


@pytest.mark.parametrize("verdict", ["healthy", "degraded"])
def test_only_a_failing_verdict_stops_it(verdict: str) -> None:
    verify = step("verify", {"software": TARGET, "verdict": verdict, "selftest": True})
    assert judged(report(verify=verify)) is None


def test_a_device_already_on_the_target_counts_without_an_install() -> None:
    assert judged({"before": TARGET, "steps": []}, changed=False) is None


@pytest.mark.parametrize("before", ["1.0.0", "1.2.0", None])
def test_an_unchanged_device_on_another_version_does_not_count(before: str | None) -> None:
    assert "no post-reboot report" in judged({"before": before, "steps": []}, changed=False)


@pytest.mark.parametrize("verify, why", [
    (None, "no post-reboot report of 1.1.0 (saw None)"),
    (step("verify", "the device answered but did not boot", ok=False), "no post-reboot report"),
    (step("verify", {"software": "1.0.0", "verdict": "healthy"}), "saw 1.0.0"),
    (step("verify", {"software": "1.2.0", "verdict": "healthy"}), "saw 1.2.0"),
    (step("verify", {"software": TARGET, "verdict": "failing"}), "health failing"),
])
def test_a_missing_or_wrong_post_reboot_report_does_not_count(verify: Any, why: str) -> None:
    assert why in judged(report(verify=verify))


@pytest.mark.parametrize("commit", [
    None, step("commit", "refused", ok=False), step("commit", {"slot": "a", "version": "1.0.0"}),
    step("commit", {"slot": "b", "version": "1.2.0"}),
])
def test_a_commit_that_did_not_answer_the_target_does_not_count(commit: Any) -> None:
    assert judged(report(commit=commit)) == "the commit did not report 1.1.0"


def test_a_device_that_installed_must_show_its_report_even_if_it_ran_the_target_before() -> None:
    assert "no post-reboot report" in judged({"before": TARGET, "steps": []}, changed=True)


def test_a_report_that_is_not_an_object_does_not_count() -> None:
    assert "no post-reboot report" in judged("install finished, exit 0")
