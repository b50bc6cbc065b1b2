"""Pause a running rollout after its current batch, from any process.

Like `engine.abort`, this only appends to the journal: the process running the
rollout reads ``pause_requested`` (its Control's pause poll), lets the batch in
flight finish, and stops with status ``paused``; `fleet ota resume` (or the
console's Resume) continues with the next batch. A rollout on its last batch
simply completes.

>>> request_pause(project, "r-20260101-120000-ab12")   # doctest: +SKIP
"""

from __future__ import annotations

from fleet.errors import UsageError
from fleet.project import Project
from fleet.rollout.journal import Journal
from fleet.rollout.report import TERMINAL, Report


def request_pause(project: Project, rollout_id: str | None,
                  reason: str = "pause requested by operator") -> Report:
    """Ask the running rollout to stop after its current batch; refused when nothing runs."""
    journal = Journal.open(project, rollout_id)
    report = journal.report()
    if report.status in TERMINAL or not journal.is_running():
        raise UsageError(f"rollout {journal.id} is {report.status}: nothing to pause",
                         fix=f"`fleet ota status {journal.id}` shows where it stands")
    journal.append({"event": "pause_requested", "reason": reason})
    return journal.report()
