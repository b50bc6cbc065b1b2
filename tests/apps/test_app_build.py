"""fleet app build / inspect / list: validation first, every file by SHA-256, nothing on refusal."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from appkit import PASS
from labkit import run_cli
from panorama_apps import ACCOUNT, BUILT, write_app

HELPER = f"{ACCOUNT}-BLUR_HELPER-1.0"


def _build(project, app: Path, *args: str):
    return run_cli(project.root, "app", "build", str(app), *args, env=PASS)


def test_build_names_every_file_by_sha256_and_size(app_project, tmp_path):
    app = write_app(tmp_path / "src", "tracker")
    res = _build(app_project, app, "--version", "1.2.0", "--json")
    assert res.exit_code == 0, res.stderr
    built = json.loads(res.stdout)
    assert (built["name"], built["version"]) == ("tracker_plain", "1.2.0")
    assert built["graph"] == "graphs/tracker_plain/graph.json"
    assert built["platforms"] == ["*"] and built["min_runtime"] == "0.1.0"
    on_disk = {p.relative_to(app).as_posix(): p for p in app.rglob("*") if p.is_file()}
    assert {f["path"] for f in built["files"]} == set(on_disk)
    for f in built["files"]:
        data = on_disk[f["path"]].read_bytes()
        assert (f["size"], f["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert {p["name"] for p in built["packages"]} == {f"{ACCOUNT}::TRACKER_CODE",
                                                      f"{ACCOUNT}::TRACKER_MODEL"}
    path = Path(built["path"])
    assert path == app_project.root / "apps" / "tracker_plain-1.2.0.app"
    inspected = json.loads(run_cli(app_project.root, "app", "inspect", str(path), "--json").stdout)
    assert inspected["manifest_sha256"] == built["manifest_sha256"]
    listed = json.loads(run_cli(app_project.root, "app", "list", "--json").stdout)
    assert [(r["name"], r["version"]) for r in listed["bundles"]] == [("tracker_plain", "1.2.0")]
    res = run_cli(app_project.root, "app", "verify", str(path))
    assert res.exit_code == 0 and "8 file hashes verified" in res.stderr


def test_version_defaults_to_the_code_package_and_must_be_dotted(app_project, tmp_path):
    app = write_app(tmp_path / "src", "tracker")
    res = _build(app_project, app, "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["version"] == "1.0"
    res = _build(app_project, app, "--version", "v2")
    assert res.exit_code == 2 and "give --version as dotted numbers" in res.stderr


def test_every_problem_is_listed_with_its_file_and_json_path_and_nothing_is_written(
        app_project, tmp_path):
    app = write_app(tmp_path / "src", "tracker")
    gpath = app / "graphs" / app.name / "graph.json"
    graph = json.loads(gpath.read_text())
    graph["nodeGraph"]["nodes"][4]["value"] = "high"
    graph["nodeGraph"]["edges"][0]["producer"] = "back_door.video_out"
    gpath.write_text(json.dumps(graph))
    (app / "packages" / f"{ACCOUNT}-TRACKER_CODE-1.0" / "src" / "link.py").symlink_to("/etc/hosts")
    res = _build(app_project, app, "--json")
    assert res.exit_code == 2
    problems = {(p["file"], p["path"]) for p in json.loads(res.stdout)["problems"]}
    assert problems == {
        ("graphs/tracker_plain/graph.json", "$.nodeGraph.nodes[4].value"),
        ("graphs/tracker_plain/graph.json", "$.nodeGraph.edges[0].producer"),
        (f"packages/{ACCOUNT}-TRACKER_CODE-1.0/src/link.py", "$"),
    }
    assert "error: 3 problem(s) in the application" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (app_project.root / "apps").exists()


def _program(app: Path, helpers: dict[str, bytes], entry: str = "bin/blur") -> Path:
    pdir = app / "packages" / HELPER
    (pdir / "bin").mkdir(parents=True)
    (pdir / "program.yml").write_text(f"entry: {entry}\nversion: '1.0'\n")
    for name, data in helpers.items():
        (pdir / name).write_bytes(data)
        os.chmod(pdir / name, 0o755)
    return pdir


def test_a_program_package_ships_one_helper_per_platform(app_project, tmp_path):
    app = write_app(tmp_path / "src", "tracker")
    _program(app, {"bin/blur-linux-amd64": b"\x7fELF x86", "bin/blur-linux-arm64-v8": b"\x7fELF"})
    res = _build(app_project, app, "--json")
    assert res.exit_code == 0, res.stderr
    built = json.loads(res.stdout)
    assert built["platforms"] == ["linux-arm64-v8", "linux-amd64"]
    helper = next(p for p in built["packages"] if p["dir"] == f"packages/{HELPER}")
    assert helper["entry"] == f"packages/{HELPER}/bin/blur"
    assert helper["platforms"] == ["linux-arm64-v8", "linux-amd64"]
    modes = {f["path"]: f["mode"] for f in built["files"]}
    assert modes[f"packages/{HELPER}/bin/blur-linux-amd64"] == 0o755


def test_program_problems_are_reported_before_anything_is_signed(app_project, tmp_path):
    app = write_app(tmp_path / "src", "tracker")
    pdir = _program(app, {"bin/blur-linux-amd64": b"x", "bin/blur-linux-arm64-v8": b"y"})
    os.chmod(pdir / "bin/blur-linux-arm64-v8", 0o644)
    res = _build(app_project, app)
    assert res.exit_code == 2
    assert (f"packages/{HELPER}/program.yml: $.entry: entry packages/{HELPER}/bin/blur on "
            f"linux-arm64-v8: packages/{HELPER}/bin/blur-linux-arm64-v8 is not executable"
            in res.stderr.replace("\n", " ").replace("  ", " "))
    shutil.rmtree(pdir)
    _program(app, {"bin/blur-linux-amd64": b"x"}, entry="../../graphs/x")
    res = _build(app_project, app)
    assert res.exit_code == 2 and "leaves the package" in res.stderr
    assert not (app_project.root / "apps").exists()


def test_packages_without_a_common_platform_are_refused(app_project, tmp_path):
    app = write_app(tmp_path / "src", "tracker")
    _program(app, {"bin/blur-linux-amd64": b"x"})
    lib = app / "packages" / f"{ACCOUNT}-TRACKER_CODE-1.0" / "src" / "libfast-linux-arm64-v8.so"
    lib.write_bytes(b"\x7fELF")
    res = _build(app_project, app, "--json")
    assert res.exit_code == 2
    [problem] = json.loads(res.stdout)["problems"]
    assert problem["message"].startswith("no platform has a variant of every tagged file")


def test_builds_are_reproducible_and_a_version_names_one_content(app_project, tmp_path):
    app = write_app(tmp_path / "src", "tracker")
    first = json.loads(_build(app_project, app, "--version", "1.2.0", "--json").stdout)
    elsewhere = _build(app_project, app, "--version", "1.2.0", "--out", str(tmp_path / "b"))
    assert elsewhere.exit_code == 0, elsewhere.stderr
    path = Path(first["path"])
    assert (tmp_path / "b" / path.name).read_bytes() == path.read_bytes()
    again = _build(app_project, app, "--version", "1.2.0", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["unchanged"] is True
    before = path.read_bytes()
    code = app / "packages" / f"{ACCOUNT}-TRACKER_CODE-1.0" / "src" / "app.py"
    code.write_text(code.read_text() + "# changed\n")
    res = _build(app_project, app, "--version", "1.2.0")
    assert res.exit_code == 2 and "already holds other content as version 1.2.0" in res.stderr
    assert path.read_bytes() == before
    res = _build(app_project, app, "--version", "1.2.0", "--force", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["unchanged"] is False
    assert path.read_bytes() != before


def test_a_broken_program_yml_is_one_of_the_problems(app_project, tmp_path):
    app = write_app(tmp_path / "src", "tracker")
    pdir = _program(app, {"bin/blur": b"x"})
    (pdir / "program.yml").write_text("entry: [bin/blur\n")
    gpath = app / "graphs" / app.name / "graph.json"
    gpath.write_text(gpath.read_text().replace('"value": 0.5', '"value": "high"'))
    res = _build(app_project, app, "--json")
    assert res.exit_code == 2
    problems = {(p["file"], p["path"]) for p in json.loads(res.stdout)["problems"]}
    assert problems == {(f"packages/{HELPER}/program.yml", "$"),
                        ("graphs/tracker_plain/graph.json", "$.nodeGraph.nodes[4].value")}


def test_a_build_container_image_is_refused_with_the_way_out(app_project, tmp_path):
    app = write_app(tmp_path / "src", "tracker", "built_image")
    res = _build(app_project, app, "--json")
    assert res.exit_code == 2
    [problem] = json.loads(res.stdout)["problems"]
    assert problem["file"] == f"assets/{BUILT}.tar.gz"
    assert "`fleet app import-panorama` leaves it out" in problem["message"]
