"""The app flow's table: every state reaches a resting one, every action state has a handler."""

from __future__ import annotations

from fleet_runtime.apps import flow
from fleet_runtime.apps.flow import RESTING, TABLE, State


def test_every_state_can_reach_a_resting_state() -> None:
    reach = {s: {n for (f, _), n in TABLE.items() if f is s} for s in State}
    for start in State:
        seen, todo = {start}, [start]
        while todo:
            for nxt in reach[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        assert seen & set(RESTING), f"{start.value} never rests"


def test_every_state_that_moves_on_its_own_has_a_handler() -> None:
    waits = {State.STAGED, *RESTING}
    assert set(flow.HANDLERS) == set(State) - waits
    assert set(flow.HANDLERS) >= flow.SELF_FINISHING
