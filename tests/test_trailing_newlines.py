"""Names and versions the controller validates refuse a trailing newline.

Python's "$" also matches before a final newline, so "1.4.0\\n" used to build
a bundle whose file name ended in a newline. Every pattern now ends in \\Z.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from labkit import RELEASE_PASS, keyed_project, run_cli

from fleet import firmware
from fleet import inventory as inv
from fleet.errors import ConfigError, UsageError
from fleet.project import Project
from fleet.rollout.policy import load_policy, parse_batches

PASS = RELEASE_PASS


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return keyed_project(tmp_path)


@pytest.mark.parametrize(("line", "quoted"), [
    ("version: 1.1.0", 'version: "1.1.0\\n"'),
    ("name: edgefleet-os", 'name: "edgefleet-os\\n"'),
    ("min_version: 1.0.0", 'min_version: "1.0.0\\n"'),
])
def test_recipe_names_and_versions(project: Project, line: str, quoted: str) -> None:
    recipe = project.firmware / "lab-1.1.0.yaml"
    recipe.write_text(recipe.read_text().replace(line, quoted, 1))
    res = run_cli(project.root, "firmware", "build", str(recipe), env=PASS)
    assert res.exit_code == 2, res.stderr
    assert "does not match" in res.stderr and "lab-1.1.0.yaml" in res.stderr
    assert not list((project.root / "out").rglob("*.bundle*"))


def test_release_key_names(project: Project) -> None:
    with pytest.raises(UsageError, match="bad release key name"):
        firmware.keygen(project, "rotated\n", passphrase=b"correct-horse-battery")


@pytest.mark.parametrize(("old", "new"), [
    ("porto-store-02:", '"porto-store-02\\n":'),
    ("site: porto-store\n", 'site: "porto-store\\n"\n'),
])
def test_inventory_device_and_site_names(project: Project, old: str, new: str) -> None:
    hosts = project.inventories / "example/hosts.yaml"
    hosts.write_text(hosts.read_text().replace(old, new, 1))
    problems = inv.check(project.inventories / "example")
    assert any("does not match" in p for p in problems), problems


def test_policy_percentages(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text('batches: [1, "10%\\n"]\n')
    with pytest.raises(ConfigError, match="policy.yaml"):
        load_policy(path)


def test_batches_flag_takes_ascii_digits_only() -> None:
    assert parse_batches("1,10%") == [1, "10%"]
    with pytest.raises(ConfigError, match="not a device count"):
        parse_batches("\u00b2")  # str.isdigit() says yes, int() says no
