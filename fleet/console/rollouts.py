"""Rollouts for the console: listing and replaying journals, and the four actions.

Abort and pause append to the journal through the same domain functions the CLI
uses (`engine.abort`, `pause.request_pause`). Resume and retry *run* the rollout
for minutes while holding its run lock, so the console starts them the way an
operator would, as ``fleet ota resume|retry`` in a process of their own: the
rollout then survives the console's restart, and CLI and console stay
interchangeable. Their output goes to ``.fleet/console/actions/``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from fleet.errors import ConfigError, FleetError, UsageError
from fleet.project import Project
from fleet.rollout.journal import Journal, rollouts_dir
from fleet.rollout.report import RETRYABLE, TERMINAL, Report

ACTIONS = ("pause", "resume", "abort", "retry")


UNREADABLE = "unreadable"  # the status listed for a journal that cannot be replayed


def list_reports(project: Project, limit: int = 200) -> list[Report]:
    """Newest first (by journal change time); a damaged journal is listed as unreadable,
    with the reason, so one bad file neither hides nor breaks the others."""
    paths = sorted(rollouts_dir(project).glob("*.jsonl"), key=lambda p: p.stat().st_mtime,
                   reverse=True)[:limit]
    out = []
    for path in paths:
        try:
            out.append(read_report(Journal(path)))
        except FleetError as exc:
            out.append(Report(id=path.stem, status=UNREADABLE, reason=exc.line()))
    return out


def read_report(journal: Journal) -> Report:
    """The journal replayed; a line that is JSON but not an event is a ConfigError too."""
    try:
        return journal.report()
    except (LookupError, TypeError, AttributeError, ValueError) as exc:
        raise ConfigError(f"journal cannot be replayed ({type(exc).__name__}: {exc})",
                          where=str(journal.path), fix="start a new rollout") from None


def journal_stamp(project: Project, rollout_id: str) -> tuple[int, int]:
    """Changes whenever the journal grows (what the live page watches)."""
    path = rollouts_dir(project) / f"{rollout_id}.jsonl"
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def allowed(report: Report, running: bool) -> list[str]:
    """The actions that make sense for this rollout now."""
    if report.header.get("engine") == "iot-jobs":
        return []  # AWS IoT Jobs drives these: `fleet ota abort` there cancels the job
    if report.status in TERMINAL:
        return ["retry"] if report.with_outcome(*RETRYABLE) else []
    if running:
        return ["abort"] if report.pause_requested else ["pause", "abort"]
    return ["resume", "abort"]


def act(project: Project, rollout_id: str, action: str, user: str) -> str:
    """Do `action`; returns a one-line message for the operator. UsageError when refused."""
    journal = Journal.open(project, rollout_id)
    report = read_report(journal)
    if action not in allowed(report, journal.is_running()):
        raise UsageError(f"rollout {rollout_id} is {report.status}: cannot {action} it now")
    if action == "abort":
        from fleet.rollout import engine

        engine.abort(project, rollout_id, f"aborted by {user} from the console")
    elif action == "pause":
        from fleet.rollout.pause import request_pause

        request_pause(project, rollout_id, f"pause requested by {user} from the console")
    else:
        _spawn(project, rollout_id, action)
    return done_message(action, rollout_id)


def done_message(action: str, rollout_id: str) -> str:
    """What the page says after `action` ('' for anything else: the address bar carries only
    the action's name, so a link cannot make the console say words of its own)."""
    if action == "abort":
        return "abort requested: no new devices start; devices in flight finish or roll back"
    if action == "pause":
        return "pause requested: the rollout stops after the current batch"
    if action in ACTIONS:
        return f"{action} started (fleet ota {action} {rollout_id})"
    return ""


def _spawn(project: Project, rollout_id: str, action: str) -> None:
    argv = [sys.executable, "-m", "fleet.cli.main", "--project", str(project.root), "--no-color",
            "ota", action, rollout_id, *(["--failed"] if action == "retry" else [])]
    folder = project.state_dir / "console" / "actions"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = folder / f"{rollout_id}-{action}-{time.strftime('%Y%m%dT%H%M%S')}.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                                 start_new_session=True)
    finally:
        os.close(fd)
    threading.Thread(target=child.wait, daemon=True).start()  # reaped when it ends
