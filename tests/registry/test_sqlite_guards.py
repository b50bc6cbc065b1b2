"""Registry write guards that mutation testing found unchecked (docs/promises.md)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fleet.project import Project
from fleet.registry import Camera, NotFound, open_registry
from fleet.registry.sqlite import SQLiteRegistry


@pytest.fixture
def reg(project: Project, monkeypatch: pytest.MonkeyPatch) -> Iterator[SQLiteRegistry]:
    monkeypatch.delenv("FLEET_SECRET_KEY", raising=False)
    registry = open_registry(project)
    assert isinstance(registry, SQLiteRegistry)
    registry.upsert_device("dev-1", site="berlin")
    yield registry
    registry.close()


def cam(name: str) -> Camera:
    return Camera(name=name, device="dev-1", rtsp_url=f"rtsp://10.0.0.9/{name}")


def test_history_says_which_cameras_were_imported_and_which_updated(reg: SQLiteRegistry) -> None:
    reg.write_cameras([cam("a"), cam("b")], [])
    reg.write_cameras([cam("c")], [cam("a"), cam("b")])
    events = {(e["subject"], e["event"]) for e in reg.history(limit=20) if e["kind"] == "camera"}
    assert events == {("a", "imported"), ("b", "imported"), ("c", "imported"),
                      ("a", "updated"), ("b", "updated")}
    newest = [(e["subject"], e["event"]) for e in reg.history(limit=3)]
    assert sorted(newest) == [("a", "updated"), ("b", "updated"), ("c", "imported")]


def test_removing_unknown_cameras_names_the_first_five_and_removes_nothing(
        reg: SQLiteRegistry) -> None:
    reg.write_cameras([cam("kept")], [])
    names = ["kept", *(f"gone-{i}" for i in range(7))]
    with pytest.raises(NotFound) as info:
        reg.remove_cameras(names)
    listed = str(info.value).split("not registered: ")[1].split(" (")[0].split(";")[0]
    assert listed.split(", ") == [f"gone-{i}" for i in range(5)]
    assert reg.get_camera("kept") is not None


def test_a_big_import_still_logs_its_updates_as_updates(reg: SQLiteRegistry) -> None:
    reg.write_cameras([cam("old")], [])
    reg.write_cameras([cam(f"new-{i}") for i in range(300)], [cam("old")])
    assert [e["event"] for e in reg.history("old")] == ["updated", "imported"]
