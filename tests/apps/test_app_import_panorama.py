"""fleet app import-panorama: panorama-cli projects, as AWS's samples lay them out, validate and
build unchanged; a bad one is refused whole, leaving nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from appkit import PASS
from labkit import run_cli
from panorama_apps import BUILT, VARIANTS, write_app

OVERRIDES: dict[str, Any] = {"nodeGraphOverrides": {
    "envelopeVersion": "2021-01-01",
    "packages": [{"name": "123456789012::exterior-south", "version": "1.0"}],
    "nodes": [{"name": "my_camera", "interface": "123456789012::exterior-south.exterior-south"},
              {"name": "strict_score", "interface": "float32", "value": 0.8}],
    "nodeOverrides": [{"replace": "front_door", "with": [{"name": "my_camera"}]},
                      {"replace": "min_score_param", "with": [{"name": "strict_score"}]}],
}}


def _import(project, src: Path, dest: Path):
    return run_cli(project.root, "app", "import-panorama", str(src), "--out", str(dest), "--json")


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_panorama_cli_layout_imports_and_builds(app_project, tmp_path, variant):
    src = write_app(tmp_path / "pano", "tracker", variant)
    (src / "overrides.json").write_text(json.dumps(OVERRIDES))
    dest = tmp_path / "apps-src" / "tracker"
    res = _import(app_project, src, dest)
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["override"] == f"graphs/{src.name}/override.json"
    assert json.loads((dest / report["override"]).read_text()) == OVERRIDES
    image = f"assets/{BUILT}.tar.gz"
    assert report["dropped"] == ([image] if variant == "built_image" else [])
    assert not (dest / image).exists()
    res = run_cli(app_project.root, "app", "build", str(dest), "--json", env=PASS)
    assert res.exit_code == 0, res.stderr
    files = {f["path"] for f in json.loads(res.stdout)["files"]}
    assert f"graphs/{src.name}/override.json" in files
    assert not any(leftover.name.startswith(".") for leftover in dest.parent.iterdir())


def test_a_bad_override_is_refused_by_its_own_name_and_nothing_is_written(app_project, tmp_path):
    src = write_app(tmp_path / "pano", "tracker")
    bad = json.loads(json.dumps(OVERRIDES))
    bad["nodeGraphOverrides"]["nodes"][1]["interface"] = "string"
    bad["nodeGraphOverrides"]["nodeOverrides"].append({"replace": "back_door", "with": [{"name": "my_camera"}]})
    (src / "graphs" / src.name / "overrides.json").write_text(json.dumps(bad))
    dest = tmp_path / "apps-src" / "tracker"
    res = _import(app_project, src, dest)
    assert res.exit_code == 2
    problems = {(p["file"], p["path"]) for p in json.loads(res.stdout)["problems"]}
    assert problems == {
        (f"graphs/{src.name}/overrides.json", "$.nodeGraphOverrides.nodeOverrides[1].with"),
        (f"graphs/{src.name}/overrides.json", "$.nodeGraphOverrides.nodeOverrides[2].replace"),
    }
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_refusals_without_a_project_or_over_an_existing_folder(app_project, tmp_path):
    res = _import(app_project, tmp_path, tmp_path / "out")
    assert res.exit_code == 2 and "not a panorama-cli project" in res.stderr
    src = write_app(tmp_path / "pano", "tracker")
    (tmp_path / "taken").mkdir()
    res = _import(app_project, src, tmp_path / "taken")
    assert res.exit_code == 2 and "already exists" in res.stderr


def test_a_link_in_the_project_is_refused(app_project, tmp_path):
    src = write_app(tmp_path / "pano", "tracker")
    code = src / "packages" / "123456789012-TRACKER_CODE-1.0" / "src"
    (code / "secrets.txt").symlink_to("/etc/hostname")
    dest = tmp_path / "apps-src" / "tracker"
    res = _import(app_project, src, dest)
    assert res.exit_code == 2 and not dest.exists()
    [problem] = json.loads(res.stdout)["problems"]
    assert problem["file"].endswith("src/secrets.txt") and "link" in problem["message"]
