"""The recap: per device, how its tasks ended (Ansible's PLAY RECAP), from the journal.

Counts ``ok``, ``changed``, ``failed``, ``skipped``, ``unpredictable`` (check
mode: the operation could not tell), ``rescued`` and ``ignored`` over every
play; ``not_run`` is set for a device a stopped play never reached. Once-per-play
tasks are counted under ``(once)``.

>>> recap_rows(state)[0]   # doctest: +SKIP
{'device': 'berlin-01', 'ok': 3, 'changed': 1, 'failed': 0, ...}
"""

from __future__ import annotations

from typing import Any

from fleet.play.journal import PlayState
from fleet.play.work import ONCE, STATUSES
from fleet.rollout.report import FAILED, NOT_RUN

ONCE_ROW = "(once)"


def recap_rows(state: PlayState) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}

    def row(name: str) -> dict[str, Any]:
        return rows.setdefault(name, {"device": name, **{s: 0 for s in STATUSES},
                                      "not_run": False, "reason": ""})

    for report in state.reports.values():
        for name, dev in report.devices.items():
            r = row(name)
            r["not_run"] = r["not_run"] or dev.outcome == NOT_RUN
            if dev.outcome == FAILED and not r["reason"]:
                r["reason"] = dev.reason
    for event in state.order:
        r = row(ONCE_ROW if event["device"] == ONCE else str(event["device"]))
        status = "ignored" if event.get("ignored") else str(event.get("status", "ok"))
        r[status] = r.get(status, 0) + 1
        if status == "rescued":
            r["failed"] = max(0, r["failed"] - 1)
    return sorted(rows.values(), key=lambda r: (r["device"] == ONCE_ROW, r["device"]))


def failed_devices(state: PlayState) -> list[str]:
    return [r["device"] for r in recap_rows(state) if r["failed"]]
