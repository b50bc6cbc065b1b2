"""`fleet app remove|rollback`: one agent call per device, answered as a row.

Not rollouts: they move no bytes, and the device itself switches back to the
version it kept (`fleet-agent app rollback`) or stops and deletes the app
(`fleet-agent app remove`). Removing an app a device does not have is not a
failure (state ``absent``): removal is idempotent.

>>> nr.run(task=app_action, verb="rollback", app="color")   # doctest: +SKIP
"""

from __future__ import annotations

from nornir.core.task import Result, Task

from fleet.agent import agent_for
from fleet.errors import AgentCallError, FleetError

VERBS = ("remove", "rollback")


def app_action(task: Task, verb: str, app: str) -> Result:
    """``{"state": removed|absent|rolled_back|failed|offline, "version", "reason"}``."""
    if verb not in VERBS:
        raise ValueError(f"unknown app action {verb!r}")
    agent = agent_for(task)
    try:
        if verb == "remove":
            agent.call("app", "remove", app)
            return Result(task.host, changed=True, result={"state": "removed", "version": None})
        answer = agent.call("app", "rollback", app, "--reason", "fleet app rollback")
        status = answer.get("app") or {}
        return Result(task.host, changed=True,
                      result={"state": "rolled_back", "version": status.get("current")})
    except AgentCallError as exc:
        if verb == "remove" and exc.code == "not-found":
            return Result(task.host, result={"state": "absent", "version": None})
        return Result(task.host, failed=True,
                      result={"state": "failed", "reason": f"{exc.code}: {exc.message}"})
    except FleetError as exc:
        return Result(task.host, failed=True, result={"state": "failed", "reason": exc.line()})
