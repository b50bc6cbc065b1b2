"""Bad project input: fleet.yaml, --project, lab options. One line, exit 2, nothing changed."""

from __future__ import annotations

from pathlib import Path

from labkit import run_cli


def test_unknown_fleet_yaml_setting_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "fleet.yaml").write_text("inventory: lab\nhealth:\n  disk_warn: 80\n")
    res = run_cli(tmp_path, "inventory", "list")
    assert res.exit_code == 2
    assert "fleet.yaml:3" in res.stderr and "disk_warn" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_wrong_type_in_fleet_yaml(tmp_path: Path) -> None:
    (tmp_path / "fleet.yaml").write_text("concurrency: many\n")
    res = run_cli(tmp_path, "lab", "status")
    assert res.exit_code == 2 and "$.concurrency" in res.stderr


def test_missing_project_directory(tmp_path: Path) -> None:
    res = run_cli(tmp_path / "nowhere", "inventory", "list")
    assert res.exit_code == 2 and "does not exist" in res.stderr


def test_lab_up_refuses_bad_sizes_and_servers_before_creating_anything(tmp_path: Path) -> None:
    assert run_cli(tmp_path, "lab", "up", "--sites", "0").exit_code == 2
    res = run_cli(tmp_path, "lab", "up", "--ssh", "telnet")
    assert res.exit_code == 2 and "unknown --ssh" in res.stderr
    assert not (tmp_path / ".fleet/lab").exists() and not (tmp_path / "inventories").exists()
