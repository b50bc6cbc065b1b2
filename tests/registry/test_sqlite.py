"""The embedded registry: devices, statuses, software, tags, history, schema migrations."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from fleet.errors import ConfigError
from fleet.project import Project
from fleet.registry import (
    AWAITING_PROVISIONING,
    OFFLINE,
    ONLINE,
    PROVISIONED,
    Camera,
    NotFound,
    open_registry,
)
from fleet.registry.schema import MIGRATIONS, VERSION, migrate, version_of
from fleet.registry.sqlite import SQLiteRegistry, connect

HOSTS = [
    {
        "name": "berlin-01",
        "hostname": "127.0.0.1",
        "port": 2201,
        "data": {
            "site": "berlin",
            "serial": "SN-B1",
            "hardware": "orin",
            "arch": "aarch64",
            "tags": ["canary", "ring=1"],
        },
    },
    {
        "name": "berlin-02",
        "hostname": "127.0.0.1",
        "port": 2202,
        "data": {"site": "berlin", "serial": "SN-B2", "hardware": "orin", "arch": "aarch64"},
    },
    {
        "name": "paris-01",
        "hostname": "127.0.0.1",
        "port": 2203,
        "data": {"site": "paris", "serial": "SN-P1", "hardware": "xavier", "arch": "aarch64"},
    },
]


@pytest.fixture
def reg(project: Project):
    registry = open_registry(project)
    yield registry
    registry.close()


def test_default_backend_is_sqlite_with_wal_foreign_keys_0600(project: Project, reg) -> None:
    assert isinstance(reg, SQLiteRegistry) and reg.backend == "sqlite"
    path = project.state_dir / "registry.db"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert reg.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert reg.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert version_of(reg.conn) == VERSION


def test_register_from_inventory_is_idempotent_and_keeps_status(reg) -> None:
    first = reg.register_from_inventory(HOSTS)
    assert first.created == ["berlin-01", "berlin-02", "paris-01"]
    reg.set_device_status("berlin-01", PROVISIONED)
    again = reg.register_from_inventory(HOSTS)
    assert again.created == [] and again.updated == [] and len(again.unchanged) == 3
    dev = reg.get_device("berlin-01")
    assert dev["provisioning"] == PROVISIONED and dev["site"] == "berlin"
    assert dev["tags"] == {"canary": "", "ring": "1"} and dev["port"] == 2201
    moved = [dict(HOSTS[2], data={**HOSTS[2]["data"], "serial": "SN-P1b"})]
    assert reg.register_from_inventory(moved).updated == ["paris-01"]


def test_statuses_follow_panorama_and_online_stamps_last_seen(reg) -> None:
    reg.upsert_device("d1", site="s1", hardware="orin", arch="aarch64")
    dev = reg.get_device("d1")
    assert dev["status"] == AWAITING_PROVISIONING and dev["last_seen"] is None
    reg.set_device_status("d1", "SUCCEEDED")  # Panorama's word for provisioned
    reg.set_device_status("d1", ONLINE)
    dev = reg.get_device("d1")
    assert (dev["provisioning"], dev["connection"], dev["status"]) == (PROVISIONED, ONLINE, ONLINE)
    assert dev["last_seen"] is not None
    reg.set_device_status("d1", OFFLINE)
    assert reg.get_device("d1")["status"] == OFFLINE
    assert [d["name"] for d in reg.list_devices(statuses=[OFFLINE])] == ["d1"]
    with pytest.raises(ConfigError, match="unknown device status"):
        reg.set_device_status("d1", "HAPPY")
    with pytest.raises(NotFound):
        reg.set_device_status("nope", ONLINE)


def test_software_target_and_current(reg) -> None:
    reg.upsert_device("d1", site="s1")
    reg.set_current_software("d1", "1.0.0")
    reg.set_target_software("d1", "1.1.0")
    assert reg.get_device("d1")["update_needed"] is True
    reg.set_current_software("d1", "1.1.0")
    dev = reg.get_device("d1")
    assert dev["update_needed"] is False and dev["software_current"] == "1.1.0"
    events = [e["event"] for e in reg.history("d1")]
    assert events[:3] == ["software-current", "software-target", "software-current"]


def test_list_filters_by_site_tag_and_name(reg) -> None:
    reg.register_from_inventory(HOSTS)
    reg.tag_device("paris-01", {"ring": "2"})
    assert [d["name"] for d in reg.list_devices(sites=["paris"])] == ["paris-01"]
    assert [d["name"] for d in reg.list_devices(tags=["canary"])] == ["berlin-01"]
    assert [d["name"] for d in reg.list_devices(tags=["ring=2"])] == ["paris-01"]
    assert [d["name"] for d in reg.list_devices(names=["berlin-02"])] == ["berlin-02"]
    assert reg.tag_device("berlin-01", {}, remove=["canary"])["tags"] == {"ring": "1"}


def test_invalid_names_and_fields_are_refused_before_any_change(reg) -> None:
    with pytest.raises(ConfigError, match="invalid device name"):
        reg.upsert_device("bad name", site="s1")
    with pytest.raises(ConfigError, match="needs a site"):
        reg.upsert_device("d1")
    with pytest.raises(ConfigError, match="unknown device field"):
        reg.upsert_device("d1", site="s1", colour="red")
    assert reg.list_devices() == []


def test_deregister_keeps_history_and_refuses_while_cameras_remain(reg) -> None:
    reg.upsert_device("d1", site="s1")
    reg.write_cameras([Camera("c1", "d1", "rtsp://h/s", "u", "pw")], [])
    with pytest.raises(ConfigError, match="still has 1 camera"):
        reg.deregister_device("d1")
    removed = reg.deregister_device("d1", remove_cameras=True)
    assert removed["cameras_removed"] == ["c1"]
    assert reg.get_device("d1") is None and reg.get_camera("c1") is None
    assert [e["event"] for e in reg.history("d1")] == ["deregistered", "registered"]
    assert [e["event"] for e in reg.history("c1")] == ["removed", "imported"]


def test_camera_needs_a_registered_device_foreign_key(reg) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        reg.write_cameras([Camera("c1", "ghost", "rtsp://h/s")], [])
    assert reg.list_cameras() == []


def _camera_rows(project: Project) -> list[tuple[str, str]]:
    """What another process would read: a fresh connection, not the writer's."""
    conn = connect(project.state_dir / "registry.db")
    try:
        return conn.execute("SELECT name, rtsp_url FROM cameras ORDER BY name").fetchall()
    finally:
        conn.close()


def test_a_camera_import_that_fails_on_a_later_row_writes_no_row(project: Project, reg) -> None:
    reg.upsert_device("d1", site="s1")
    good, bad = Camera("c1", "d1", "rtsp://h/1"), Camera("c2", "ghost", "rtsp://h/2")
    with pytest.raises(sqlite3.IntegrityError):
        reg.write_cameras([good, bad], [])  # c1 is valid; c2's device does not exist
    assert _camera_rows(project) == []
    assert reg.history("c1") == []


def test_a_camera_write_failing_after_its_inserts_and_updates_rolls_all_back(
        project: Project, reg) -> None:
    """The last statement of the write (its history rows) fails: the inserts and updates
    before it, which SQLite had already applied, must not survive."""
    reg.upsert_device("d1", site="s1")
    reg.write_cameras([Camera("c0", "d1", "rtsp://h/old")], [])
    reg.conn.execute("CREATE TRIGGER fail_history BEFORE INSERT ON history "
                     "WHEN NEW.subject = 'c2' BEGIN SELECT RAISE(ABORT, 'disk trouble'); END")
    with pytest.raises(sqlite3.IntegrityError, match="disk trouble"):
        reg.write_cameras([Camera("c1", "d1", "rtsp://h/1"), Camera("c2", "d1", "rtsp://h/2")],
                          [Camera("c0", "d1", "rtsp://h/new")])
    assert _camera_rows(project) == [("c0", "rtsp://h/old")]
    assert [e["event"] for e in reg.history("c0")] == ["imported"]
    assert reg.history("c1") == []


def test_camera_password_is_encrypted_and_masked(project: Project, reg) -> None:
    reg.upsert_device("d1", site="s1")
    reg.write_cameras([Camera("c1", "d1", "rtsp://h/s", "admin", "Tr0ub4dor&3")], [])
    assert reg.get_camera("c1")["password"] == "***"
    assert reg.camera_password("c1") == "Tr0ub4dor&3"
    stored = reg.conn.execute("SELECT password_ref FROM cameras").fetchone()[0]
    assert stored.startswith("v1.") and "Tr0ub4dor" not in stored


def test_migration_from_version_1_keeps_data(project: Project) -> None:
    path = project.state_dir / "registry.db"
    conn = connect(path)
    migrate(conn, str(path), target=1)
    conn.execute("INSERT INTO sites VALUES ('s1', 0)")
    conn.execute(
        "INSERT INTO devices(name, site, created_at, updated_at) VALUES ('d1', 's1', 0, 0)"
    )
    conn.execute(
        "INSERT INTO cameras(name, device, rtsp_url, tags, created_at, updated_at) "
        "VALUES ('c1', 'd1', 'rtsp://h/s', '{\"app\": \"people\"}', 0, 0)"
    )
    conn.close()
    reg = open_registry(project)
    assert version_of(reg.conn) == len(MIGRATIONS) == 2
    assert reg.get_camera("c1")["status_detail"] == ""
    assert reg.camera_counts() == {("d1", "people"): 1}
    reg.close()


def test_database_from_a_newer_edgefleet_is_refused(project: Project) -> None:
    path = project.state_dir / "registry.db"
    conn = connect(path)
    conn.execute(f"PRAGMA user_version = {VERSION + 1}")
    conn.close()
    with pytest.raises(ConfigError, match="newer than this edgefleet"):
        open_registry(project)


def test_unknown_backend_is_a_config_error_naming_the_line(tmp_path: Path) -> None:
    (tmp_path / "fleet.yaml").write_text("inventory: lab\nregistry:\n  backend: etcd\n")
    with pytest.raises(ConfigError, match=r"fleet.yaml:3: \$.registry.backend"):
        open_registry(Project.locate(tmp_path))
    with pytest.raises(ConfigError, match="unknown registry backend"):
        open_registry(Project(tmp_path, {"registry": {"backend": "etcd"}}))


def test_aws_backend_needs_a_region(tmp_path: Path) -> None:
    (tmp_path / "fleet.yaml").write_text("registry: {backend: aws}\n")
    with pytest.raises(ConfigError, match="needs a region"):
        open_registry(Project.locate(tmp_path))


def test_nornir_worker_threads_can_share_one_registry(reg) -> None:
    from concurrent.futures import ThreadPoolExecutor

    names = [f"d{i}" for i in range(8)]
    for name in names:
        reg.upsert_device(name, site="s1")

    def work(name: str) -> None:
        for n in range(25):
            reg.set_current_software(name, f"1.0.{n}")
            reg.set_device_status(name, ONLINE if n % 2 else OFFLINE)
            assert len(reg.list_devices()) == 8

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, names))
    assert {d["software_current"] for d in reg.list_devices()} == {"1.0.24"}
    assert len(reg.history("d3")) == 51  # registered + 25 software + 25 status changes


def test_open_registry_is_a_context_manager_that_closes_the_database(project: Project) -> None:
    with open_registry(project) as registry:
        registry.upsert_device("d1", site="s1")
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        registry.conn.execute("SELECT 1")  # type: ignore[attr-defined]
    with pytest.raises(NotFound), open_registry(project) as failing:
        failing.set_device_status("nobody", ONLINE)
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        failing.conn.execute("SELECT 1")  # type: ignore[attr-defined]
    with open_registry(project) as again:
        assert again.get_device("d1")["site"] == "s1"  # type: ignore[index]


def test_the_store_is_made_of_devices_cameras_and_history_parts(reg) -> None:
    reg.upsert_device("d1", site="s1")
    reg.write_cameras([Camera("c1", "d1", "rtsp://h/s", password="pw")], [])
    assert reg.devices.get("d1") == reg.get_device("d1")
    assert reg.cameras.find(devices=["d1"]) == reg.list_cameras(devices=["d1"])
    assert reg.changes.recent("c1") == reg.history("c1")
    assert [h["event"] for h in reg.history("c1")] == ["imported"]
