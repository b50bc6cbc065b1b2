"""The shipped playbooks pass the engine's own validation (operations, arguments, types,
templates, host patterns) against an inventory with several sites."""

from __future__ import annotations

from pathlib import Path

import pytest
from playkit import write_inventory

from fleet.play import engine
from fleet.project import Project

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"


@pytest.mark.parametrize("name", ["new-site.yaml", "monthly-update.yaml", "incident.yaml"])
def test_each_shipped_playbook_is_valid(tmp_path, name):
    write_inventory(tmp_path, {"berlin": 3, "paris": 2})
    prepared = engine.prepare(Project.locate(tmp_path), PLAYBOOKS / name,
                              engine.Options(inventory="lab", sites=("berlin",)))
    assert prepared.book.plays, name
