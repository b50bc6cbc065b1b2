"""Inventories: schema checks with file and line, selectors, the --json shape."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from labkit import run_cli

from fleet import inventory as inv
from fleet.errors import ConfigError
from fleet.project import Project

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def example_project(tmp_path: Path) -> Project:
    shutil.copytree(REPO / "inventories/example", tmp_path / "inventories/example")
    return Project.locate(tmp_path)


def test_shipped_example_inventory_is_valid(example_project: Project) -> None:
    assert inv.check(example_project.inventories / "example") == []


def test_selectors_filter_by_site_tag_group_and_limit(example_project: Project) -> None:
    def names(**kw: object) -> list[str]:
        sel = inv.Selection.of("example", **kw)  # type: ignore[arg-type]
        return sorted(inv.select(example_project, sel).inventory.hosts)

    assert names(site=["porto-store"]) == ["porto-store-01", "porto-store-02"]
    assert names(tag=["canary"]) == ["hamburg-dc-01", "nagoya-plant-03", "porto-store-01"]
    assert names(group=["site-nagoya-plant"], tag=["line-2"]) == ["nagoya-plant-02"]
    assert names(limit="hamburg-dc-02, porto-store-01") == ["hamburg-dc-02", "porto-store-01"]


def test_unknown_limit_name_is_refused(example_project: Project) -> None:
    with pytest.raises(ConfigError, match="unknown device.*nope"):
        inv.select(example_project, inv.Selection.of("example", limit="nope"))


def test_empty_selection_is_an_error(example_project: Project) -> None:
    with pytest.raises(ConfigError, match="matched no devices"):
        inv.select(example_project, inv.Selection.of("example", site=["atlantis"]))


def test_check_reports_file_line_and_path(example_project: Project) -> None:
    hosts = example_project.inventories / "example/hosts.yaml"
    text = hosts.read_text().replace("arch: x86_64", "arch: sparc", 1)
    text = text.replace("groups: [site-porto-store]", "groups: [site-porto]", 1)
    hosts.write_text(text)
    problems = inv.check(example_project.inventories / "example")
    line_of_sparc = next(i for i, ln in enumerate(text.splitlines(), 1) if "sparc" in ln)
    assert any(f"hosts.yaml:{line_of_sparc}:" in p and ".data.arch" in p for p in problems)
    assert any("unknown group 'site-porto'" in p for p in problems)


def test_check_cli_exits_nonzero_on_bad_device_name(example_project: Project) -> None:
    hosts = example_project.inventories / "example/hosts.yaml"
    hosts.write_text(hosts.read_text().replace("porto-store-02:", "porto store/02:"))
    res = run_cli(example_project.root, "inventory", "check", "-i", "example")
    assert res.exit_code == 1
    assert "hosts.yaml" in res.stderr and "porto store/02" in res.stderr


def test_invalid_yaml_is_one_line_with_location(example_project: Project) -> None:
    (example_project.inventories / "example/groups.yaml").write_text("site-x: [unclosed\n")
    res = run_cli(example_project.root, "inventory", "list", "-i", "example")
    assert res.exit_code == 2
    assert "groups.yaml:" in res.stderr and "Traceback" not in res.stderr


def test_list_json_shape(example_project: Project) -> None:
    res = run_cli(example_project.root, "inventory", "list", "-i", "example", "--json")
    assert res.exit_code == 0
    devices = json.loads(res.stdout)["devices"]
    assert len(devices) == 8
    first = devices[0]
    assert set(first) == {"name", "site", "hostname", "port", "groups", "data"}
    assert first["data"]["serial"].startswith("EF")


def test_missing_inventory_names_the_fix(tmp_path: Path) -> None:
    res = run_cli(tmp_path, "inventory", "list", "-i", "lab")
    assert res.exit_code == 2
    assert "fleet lab up" in res.stderr
