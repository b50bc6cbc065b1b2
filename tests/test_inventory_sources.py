"""Inventories read once: the fast loader, the parse cache, the registry inventory (#19).

Timings live in bench/inventory_scale.py; these tests check that every source
yields the same hosts, groups and data, and that errors keep file and line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from labkit import run_cli
from nornir.plugins.inventory.simple import SimpleInventory
from ruamel.yaml import YAML

from fleet import inventory as inv
from fleet.errors import ConfigError
from fleet.fastyaml import load_plain
from fleet.project import Project
from fleet.registry import open_registry

REPO = Path(__file__).resolve().parents[1]


def write_inventory(root: Path, devices: int, sites: int = 4) -> Path:
    folder = root / "inventories" / "gen"
    folder.mkdir(parents=True)
    hosts = []
    for i in range(devices):
        tags = [f"ring={i % 3}"] + (["canary"] if i % 10 == 0 else [])
        hosts.append(f"dev-{i:04d}:\n  hostname: 10.0.{i // 250}.{i % 250 + 1}\n"
                     f"  port: {2200 + i}\n  groups: [site-s{i % sites}]\n  data:\n"
                     f"    site: s{i % sites}\n    serial: EF{i:08d}\n"
                     f"    hardware: jetson-orin-nano\n    arch: aarch64\n"
                     f"    tags: [{', '.join(tags)}]\n")
    (folder / "hosts.yaml").write_text("# generated\n" + "".join(hosts))
    (folder / "groups.yaml").write_text("".join(
        f"site-s{s}:\n  data:\n    site: s{s}\n" for s in range(sites)))
    (folder / "defaults.yaml").write_text("port: 22\n")
    return folder


@pytest.fixture
def gen_project(tmp_path: Path) -> Project:
    write_inventory(tmp_path, 60)
    return Project.locate(tmp_path)


# -- the fast loader reads what ruamel reads, or declines --------------------------------

DOCUMENTS = [
    "a: 1\nb: -2\nc: 1.5\nd: 1e3\ne: ~\nf:\ng: true\nh: False\n",
    "a: yes\nb: on\nc: 'no'\nd: \"0x1F\"\ne: |\n  two\n  lines\nf: >\n  folded\n  text\n",
    "- [a, {b: c}]\n- {}\n- []\n- 'x: y'\n",
    "a: 012\n", "a: 0o17\n", "a: 0x1F\n", "a: 1_000\n", "a: .inf\n", "a: 2026-12-02\n",
    "a: 1\na: 2\n", "a: &x [1]\nb: *x\n", "<<: {a: 1}\n", "a: !!binary aGk=\n",
    "? [a]\n: 1\n", "1: one\n", "a: " + "[" * 70 + "]" * 70 + "\n",
]


@pytest.mark.parametrize("text", DOCUMENTS)
def test_fast_loader_reads_as_ruamel_does_or_declines(text: str) -> None:
    from fleet.schema import plain

    sure, value = load_plain(text)
    if sure:
        assert value == plain(YAML(typ="rt").load(text))


@pytest.mark.parametrize("text", ["a: &x [1]\nb: *x\n", "a: 1\na: 2\n",
                                  "a: " + "[" * 70 + "]" * 70 + "\n", "a: [unclosed\n"])
def test_fast_loader_declines_what_the_careful_loader_refuses(text: str) -> None:
    assert load_plain(text) == (False, None)


# -- one parse feeds Nornir: same inventory as Nornir's SimpleInventory -------------------

def _shape(inventory: Any) -> dict[str, Any]:
    return {name: (h.hostname, h.port, h.username, [g.name for g in h.groups],
                   dict(h.items()), h.has_parent_group("site-hamburg-dc"))
            for name, h in inventory.hosts.items()}


def test_inventory_plugin_builds_what_simple_inventory_builds(tmp_path: Path) -> None:
    folder = tmp_path / "inventories/example"
    shutil.copytree(REPO / "inventories/example", folder)
    nr = inv.load(Project.locate(tmp_path), "example")
    theirs = SimpleInventory(str(folder / "hosts.yaml"), str(folder / "groups.yaml"),
                             str(folder / "defaults.yaml")).load()
    ours = _shape(nr.inventory)
    for shape in ours.values():
        shape[3].sort()
    assert ours == _shape(theirs)
    assert set(nr.inventory.groups) == set(theirs.groups)


def test_cache_follows_every_edit(gen_project: Project) -> None:
    hosts = gen_project.inventories / "gen/hosts.yaml"
    first = inv.load(gen_project, "gen").inventory.hosts["dev-0001"]
    assert first.data["serial"] == "EF00000001"
    assert list((gen_project.state_dir / "cache").glob("inventory-*.json"))
    # Same length, same mtime second: only the content differs.
    hosts.write_text(hosts.read_text().replace("EF00000001", "EF99999991"))
    again = inv.load(gen_project, "gen").inventory.hosts["dev-0001"]
    assert again.data["serial"] == "EF99999991"


def test_damaged_cache_is_ignored(gen_project: Project) -> None:
    inv.load(gen_project, "gen")
    for entry in (gen_project.state_dir / "cache").glob("inventory-*.json"):
        entry.write_text('{"key": "x", "hosts": ')
    assert len(inv.load(gen_project, "gen").inventory.hosts) == 60


def test_cached_inventory_still_reports_new_errors_with_lines(gen_project: Project) -> None:
    inv.load(gen_project, "gen")
    hosts = gen_project.inventories / "gen/hosts.yaml"
    text = hosts.read_text().replace("arch: aarch64", "arch: sparc", 3)
    hosts.write_text(text)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "sparc" in ln)
    problems = inv.check(hosts.parent)
    assert problems[0].startswith(f"{hosts}:{line}: $.dev-0000.data.arch:")
    with pytest.raises(ConfigError, match=rf"hosts.yaml:{line}: .* \(and 2 more"):
        inv.load(gen_project, "gen")


@pytest.mark.parametrize("bad, expect", [
    ("groups: [site-s9]", r"hosts.yaml:{line}: \$.dev-0005.groups: unknown group 'site-s9'"),
    ("port: 99999", r"hosts.yaml:{line}: \$.dev-0005.port: 99999 is greater than"),
    ("serial: &a EF00000005", r"hosts.yaml:{line}"),
    ("hostname: [oops", r"hosts.yaml:\d+"),
])
def test_errors_in_a_large_inventory_carry_file_and_line(
        gen_project: Project, bad: str, expect: str) -> None:
    hosts = gen_project.inventories / "gen/hosts.yaml"
    lines = hosts.read_text().splitlines()
    start = lines.index("dev-0005:")
    key = bad.split(":")[0]
    line = next(i for i in range(start, len(lines)) if lines[i].strip().startswith(key + ":")) + 1
    lines[line - 1] = lines[line - 1].split(":")[0] + ":" + bad.split(":", 1)[1]
    if bad.startswith("serial: &a"):
        lines.insert(line, "    tags: *a")  # an alias: refused, with its line
        line += 1
    hosts.write_text("\n".join(lines) + "\n")
    res = run_cli(gen_project.root, "inventory", "check", "-i", "gen")
    assert res.exit_code == 1 and "Traceback" not in res.stderr
    import re

    assert re.search(expect.format(line=line), res.stderr), res.stderr


# -- the registry as an inventory ---------------------------------------------------------

def _listing(root: Path, *args: str) -> list[dict[str, Any]]:
    res = run_cli(root, "inventory", "list", "--json", *args)
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)["devices"]
    keep = ("site", "serial", "hardware", "arch")
    # The registry keeps tags as a mapping (sorted), not in the order the YAML lists them.
    return [{**d, "data": {**{k: d["data"][k] for k in keep}, "tags": sorted(d["data"]["tags"])}}
            for d in out]


def test_registry_inventory_lists_what_the_yaml_lists(gen_project: Project) -> None:
    registry = open_registry(gen_project)
    try:
        registry.register_from_inventory(inv.load(gen_project, "gen"))
    finally:
        registry.close()
    root = gen_project.root
    for selector in ([], ["--site", "s1"], ["--tag", "canary"], ["--tag", "ring=2"],
                     ["--group", "site-s2", "--tag", "canary"], ["--limit", "dev-0007,dev-0012"],
                     ["--site", "s0", "--site", "s2", "--tag", "ring=1"]):
        from_yaml = _listing(root, "-i", "gen", *selector)
        assert from_yaml, selector
        assert _listing(root, "-i", "registry", *selector) == from_yaml, selector


def test_registry_inventory_refuses_unknown_limit_names(gen_project: Project) -> None:
    registry = open_registry(gen_project)
    try:
        registry.register_from_inventory(inv.load(gen_project, "gen"))
    finally:
        registry.close()
    res = run_cli(gen_project.root, "inventory", "list", "-i", "registry", "--limit", "ghost")
    assert res.exit_code == 2
    assert "unknown device(s) in --limit: ghost" in res.stderr


def test_registry_inventory_without_a_registry_says_how_to_make_one(tmp_path: Path) -> None:
    res = run_cli(tmp_path, "inventory", "list", "-i", "registry")
    assert res.exit_code == 2
    assert "fleet devices register" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / ".fleet/registry.db").exists()
