"""A root-filesystem-sized image builds, inspects and verifies (the limits are the device's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures_bundle import ARCH, HARDWARE
from labkit import run_cli

from fleet import firmware
from fleet.project import Project

PASS = {"FLEET_RELEASE_PASSPHRASE": "correct-horse-battery"}
FILES = 12_000  # more than the old 1 MiB manifest held; small files keep it quick


@pytest.fixture
def big_recipe(tmp_path: Path) -> tuple[Project, Path]:
    (tmp_path / "project/firmware").mkdir(parents=True)
    project = Project.locate(tmp_path / "project")
    firmware.keygen(project, passphrase=PASS["FLEET_RELEASE_PASSPHRASE"].encode())
    payload = project.root / "firmware/rootfs"
    for i in range(FILES):
        folder = payload / f"usr/share/doc/package-{i // 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"file-{i:05d}.txt").write_text(f"{i}\n")
    recipe = project.root / "firmware/rootfs.yaml"
    recipe.write_text(f"name: rootfs\nversion: 1.1.0\nhardware: [{HARDWARE}]\narch: {ARCH}\n"
                      "min_version: 1.0.0\npayload: rootfs\n")
    return project, recipe


def test_an_image_of_twelve_thousand_files_builds_inspects_and_verifies(big_recipe):
    project, recipe = big_recipe
    res = run_cli(project.root, "firmware", "build", str(recipe), "--json", env=PASS)
    assert res.exit_code == 0, res.stderr
    path = Path(json.loads(res.stdout)["path"])
    res = run_cli(project.root, "firmware", "inspect", str(path), "--json")
    assert res.exit_code == 0, res.stderr
    assert len(json.loads(res.stdout)["files"]) == FILES
    res = run_cli(project.root, "firmware", "verify", str(path))  # what a device runs first
    assert res.exit_code == 0 and "verified" in res.stderr, res.stderr
