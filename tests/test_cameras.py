"""Camera CSV import (validation before any change, one transaction) and the CLI around it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from labkit import run_cli

from fleet.cameras import Limits, import_cameras, sample_csv
from fleet.project import Project
from fleet.registry import open_registry

HEADER = "name,device,rtsp_url,username,password,description,tags"


@pytest.fixture
def reg(project: Project):
    registry = open_registry(project)
    with registry.transaction():
        for i in range(1, 4):
            registry._upsert(f"dev-{i}", {"site": "berlin" if i < 3 else "paris"})
    yield registry
    registry.close()


def write(path: Path, text: str, *, bom: bool = False, crlf: bool = False) -> Path:
    if crlf:
        text = text.replace("\n", "\r\n")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def run_import(reg, path: Path, **kw):
    limits = kw.pop("limits", Limits())
    return import_cameras(reg, path, limits, env=kw.pop("env", {}), **kw)


def test_bom_crlf_quotes_reordered_columns_and_empty_lines(reg, tmp_path: Path) -> None:
    text = (
        "device,name,rtsp_url,description\n"
        "\n"
        'dev-1,door,rtsp://10.0.0.7/live/mpeg4/,"Front door, north side"\n'
        " , , , \n"
        'dev-1,dock,rtsp://10.0.0.8:8554/s1,"Loading dock\nsecond line ""quoted"""\n'
        "dev-2,lobby,RTSPS://cam.example.com/stream,\n"
        "\n"
    )
    result = run_import(reg, write(tmp_path / "c.csv", text, bom=True, crlf=True))
    assert result.ok and result.applied and result.created == ["door", "dock", "lobby"]
    assert reg.get_camera("door")["description"] == "Front door, north side"
    assert reg.get_camera("dock")["description"] == 'Loading dock\nsecond line "quoted"'
    assert reg.get_camera("lobby")["rtsp_url"] == "rtsps://cam.example.com/stream"
    assert reg.get_camera("door")["site"] == "berlin"


def test_credentials_in_the_url_move_to_the_secret_store(reg, tmp_path: Path) -> None:
    text = f"{HEADER}\ngate,dev-1,rtsp://admin:p%40ss%3Aword@10.0.0.9:554/h264?ch=1,,,,\n"
    assert run_import(reg, write(tmp_path / "c.csv", text)).ok
    cam = reg.get_camera("gate")
    assert cam["rtsp_url"] == "rtsp://10.0.0.9:554/h264?ch=1"
    assert (cam["username"], cam["password"]) == ("admin", "***")
    assert reg.camera_password("gate") == "p@ss:word"


def test_password_from_environment_and_file(reg, tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "yard.pw").write_text("from-a-file\n")
    text = (
        f"{HEADER}\n"
        "lot,dev-1,rtsp://10.0.0.1/s,admin,password_env:LOT_PW,,\n"
        "yard,dev-1,rtsp://10.0.0.2/s,admin,password_file:secrets/yard.pw,,\n"
    )
    result = run_import(reg, write(tmp_path / "c.csv", text), env={"LOT_PW": "from-env"})
    assert result.ok
    assert reg.camera_password("lot") == "from-env" and reg.camera_password("yard") == "from-a-file"


BAD_ROWS = [  # (row text after "name,device,", expected column, words in the message)
    ("bad name!,dev-1,rtsp://h/s,,,,", "name", "A-Z a-z 0-9 _ -"),
    (f"{'x' * 256},dev-1,rtsp://h/s,,,,", "name", "longer than 255"),
    ("ok1,ghost,rtsp://h/s,,,,", "device", "device 'ghost' is not registered"),
    ("ok2,dev-1,http://h/s,,,,", "rtsp_url", "scheme must be rtsp or rtsps"),
    ("ok3,dev-1,rtsp:///s,,,,", "rtsp_url", "has no host"),
    ("ok4,dev-1,rtsp://h:70000/s,,,,", "rtsp_url", "port must be a number from 1 to 65535"),
    ("ok5,dev-1,rtsp://h:0/s,,,,", "rtsp_url", "port must be a number from 1 to 65535"),
    ("ok6,dev-1,rtsp://h:554,,,,", "rtsp_url", "no stream path"),
    ("ok7,dev-1,rtsp://u:p@h/s,admin,,,", "rtsp_url", "in the URL and in the username"),
    ("ok8,dev-1,rtsp://h/s,,secret,,", "username", "empty but a password is given"),
    ("ok9,dev-1,rtsp://h/s,admin,password_env:NOPE,,", "password", "'NOPE' is not set"),
    ("ok10,dev-1,rtsp://h/s,admin,password_file:missing.pw,,", "password", "cannot be read"),
    (f"ok11,dev-1,rtsp://h/s,,,{'d' * 256},", "description", "longer than 255"),
    ("ok12,dev-1,rtsp://h/s,,,,bad tag!", "tags", "is not key=value"),
    ("ok13,dev-1,rtsp://h/s#frag,,,,", "rtsp_url", "#fragment"),
    ("ok1,dev-1,rtsp://h/s,,,,", "name", "already used on row"),
    ("ok14,dev-1,rtsp://h/s,,,", "", "has 6 fields, the header has 7"),
]


def test_every_bad_row_is_named_by_row_and_column_and_nothing_changes(reg, tmp_path: Path) -> None:
    lines = [HEADER, "good,dev-1,rtsp://10.0.0.1/s,,,,"] + [row for row, _, _ in BAD_ROWS]
    result = run_import(reg, write(tmp_path / "c.csv", "\n".join(lines) + "\n"))
    assert not result.ok and not result.applied and result.created == []
    got = {(e.row, e.column): e.message for e in result.errors}
    for offset, (_, column, words) in enumerate(BAD_ROWS):
        row = offset + 3  # header is line 1, the good row line 2
        assert words in got.get((row, column), ""), (row, column, got)
    assert len(result.errors) == len(BAD_ROWS)
    assert reg.list_cameras() == []


@pytest.mark.parametrize(
    ("text", "column", "words"),
    [
        ("name,device,rtsp_url,colour\n", "colour", "unknown column 'colour'"),
        ("name,device\n", "rtsp_url", "required column 'rtsp_url' is missing"),
        ("name,device,rtsp_url,name\n", "name", "appears 2 times"),
        ("", "", "no header row"),
        ("\n\n", "", "no header row"),
    ],
)
def test_header_problems(reg, tmp_path: Path, text: str, column: str, words: str) -> None:
    result = run_import(reg, write(tmp_path / "c.csv", text))
    assert [(e.row, e.column) for e in result.errors] == [(1, column)]
    assert words in result.errors[0].message


def test_a_file_that_is_not_utf8_names_the_line(reg, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(
        f"{HEADER}\na,dev-1,rtsp://h/s,,,,\nb,dev-1,rtsp://h/s,,,caf\xe9,\n".encode("latin-1")
    )
    result = run_import(reg, path)
    assert [(e.row, e.message) for e in result.errors] == [
        (3, "the file is not UTF-8 text (save it as CSV UTF-8)")
    ]


def test_on_conflict_fail_skip_update(reg, tmp_path: Path) -> None:
    first = write(tmp_path / "a.csv", f"{HEADER}\ncam,dev-1,rtsp://h/one,admin,pw1,,\n")
    assert run_import(reg, first).ok
    second = write(
        tmp_path / "b.csv",
        f"{HEADER}\ncam,dev-2,rtsp://h/two,admin,pw2,,\nnew,dev-2,rtsp://h/new,,,,\n",
    )
    failed = run_import(reg, second)
    assert [(e.row, e.column) for e in failed.errors] == [(2, "name")]
    assert "--on-conflict" in failed.errors[0].message and reg.get_camera("new") is None
    skipped = run_import(reg, second, on_conflict="skip")
    assert skipped.skipped == ["cam"] and skipped.created == ["new"]
    assert reg.get_camera("cam")["rtsp_url"] == "rtsp://h/one"
    updated = run_import(reg, second, on_conflict="update")
    assert updated.updated == ["cam", "new"]
    cam = reg.get_camera("cam")
    assert (cam["device"], cam["rtsp_url"]) == ("dev-2", "rtsp://h/two")
    assert reg.camera_password("cam") == "pw2"


def test_dry_run_validates_and_changes_nothing(reg, tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", f"{HEADER}\na,dev-1,rtsp://h/s,,,,\nb,dev-2,rtsp://h/s,,,,\n")
    result = run_import(reg, path, dry_run=True)
    assert result.ok and result.created == ["a", "b"] and not result.applied
    assert reg.list_cameras() == [] and reg.history("a") == []


def test_per_device_and_per_app_limits(reg, tmp_path: Path) -> None:
    rows = [f"c{i},dev-1,rtsp://h/{i},,,,app=people" for i in range(3)]
    rows += [f"d{i},dev-2,rtsp://h/{i},,,," for i in range(4)]
    result = run_import(
        reg,
        write(tmp_path / "c.csv", "\n".join([HEADER, *rows])),
        limits=Limits(max_per_app=2, max_per_device=3),
    )
    assert [(e.row, e.column) for e in result.errors] == [(4, "tags"), (8, "device")]
    assert "limit 2, cameras.max_per_app" in result.errors[0].message
    assert "would have 4 cameras (limit 3" in result.errors[1].message


def _ten_thousand(reg, tmp_path: Path, bad_row: int | None = None) -> Path:
    with reg.transaction():
        for d in range(4, 130):
            reg._upsert(f"dev-{d}", {"site": f"site-{d % 3}"})
    lines = [HEADER]
    for i in range(10_000):
        port = "99999" if i + 2 == bad_row else "554"
        lines.append(
            f"cam-{i:05d},dev-{4 + i % 126},rtsp://10.{i // 256 % 256}.0.{i % 256}:{port}"
            f'/stream1,admin,pw-{i},"Camera {i}, floor {i % 7}",'
            f"app=app{(i // 126) % 10};floor={i % 7}"
        )
    return write(tmp_path / "big.csv", "\n".join(lines) + "\n", crlf=True)


def test_ten_thousand_rows_in_one_transaction(reg, tmp_path: Path) -> None:
    path = _ten_thousand(reg, tmp_path)
    result = run_import(reg, path)  # its speed is the bench's to measure, not a test's
    assert result.ok and len(result.created) == 10_000
    assert len(reg.list_cameras()) == 10_000
    assert reg.camera_password("cam-09999") == "pw-9999"


def test_one_bad_row_among_ten_thousand_changes_nothing(reg, tmp_path: Path) -> None:
    path = _ten_thousand(reg, tmp_path, bad_row=7_778)
    result = run_import(reg, path)
    assert [(e.row, e.column) for e in result.errors] == [(7_778, "rtsp_url")]
    assert reg.list_cameras() == []


# ---- the CLI ----------------------------------------------------------------------------------


def test_cli_import_list_show_remove_json(reg, project: Project, tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.csv",
        f"{HEADER}\ndoor,dev-1,rtsp://u:pw@10.0.0.7/s,,,Door,app=x\n"
        "yard,dev-3,rtsp://10.0.0.8/s,,,,\n",
    )
    res = run_cli(project.root, "cameras", "import", str(path), "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["created"] == 2
    listed = json.loads(
        run_cli(project.root, "cameras", "list", "--site", "paris", "--json").stdout
    )
    assert [c["name"] for c in listed["cameras"]] == ["yard"]
    shown = json.loads(run_cli(project.root, "cameras", "show", "door", "--json").stdout)["camera"]
    assert shown["password"] == "***" and shown["rtsp_url"] == "rtsp://10.0.0.7/s"
    table = run_cli(project.root, "cameras", "list").stdout
    assert "door" in table and "***" in table
    res = run_cli(project.root, "cameras", "remove", "door", "ghost")
    assert res.exit_code != 0 and "ghost" in res.stderr and reg.get_camera("door") is not None
    assert json.loads(run_cli(project.root, "cameras", "remove", "door", "--json").stdout) == {
        "removed": ["door"]
    }


def test_cli_import_errors_table_and_exit_code(reg, project: Project, tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.csv", f"{HEADER}\ngood,dev-1,rtsp://h/s,,,,\nbad,dev-1,ftp://h/s,,,,\n"
    )
    res = run_cli(project.root, "cameras", "import", str(path))
    assert res.exit_code == 1
    assert "nothing was changed" in res.stderr and "rtsp_url" in res.stderr and " 3 " in res.stderr
    res = run_cli(project.root, "cameras", "import", str(path), "--json")
    assert res.exit_code == 1
    assert json.loads(res.stdout)["errors"] == [
        {"row": 3, "column": "rtsp_url", "message": "scheme must be rtsp or rtsps, not 'ftp'"}
    ]
    res = run_cli(project.root, "cameras", "import", str(path), "--on-conflict", "merge")
    assert res.exit_code == 2 and "--on-conflict" in res.stderr
    res = run_cli(project.root, "cameras", "import", str(tmp_path / "missing.csv"))
    assert res.exit_code == 2 and "cannot read" in res.stderr
    assert reg.list_cameras() == []


def test_limits_come_from_fleet_yaml(reg, project: Project, tmp_path: Path) -> None:
    (project.root / "fleet.yaml").write_text("cameras: {max_per_device: 1}\n")
    path = write(tmp_path / "c.csv", f"{HEADER}\na,dev-1,rtsp://h/s,,,,\nb,dev-1,rtsp://h/t,,,,\n")
    res = run_cli(project.root, "cameras", "import", str(path), "--json")
    assert json.loads(res.stdout)["errors"][0]["column"] == "device"


def test_sample_csv_imports_cleanly(reg, tmp_path: Path) -> None:
    text = sample_csv([{"name": "dev-1", "site": "berlin"}, {"name": "dev-3", "site": "paris"}])
    result = run_import(reg, write(tmp_path / "c.csv", text), env={"LAB_CAMERA_PASSWORD": "pw"})
    assert result.ok and len(result.created) == 4
    assert reg.camera_password("dev-1-cam1") == "pw" and reg.camera_password("dev-1-cam2") == ""


def test_example_inventory_cameras_csv_validates(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    example = repo / "inventories" / "example" / "cameras.csv"
    if not example.exists():
        pytest.skip("inventories/example/cameras.csv not present")
    from fleet import inventory as inv

    project = Project.locate(repo)
    nr = inv.load(project, str(repo / "inventories" / "example"))
    state = Project(tmp_path, project.config)
    registry = open_registry(state)
    registry.register_from_inventory(nr)
    result = import_cameras(
        registry, example, Limits(), dry_run=True, env={"EXAMPLE_CAMERA_PASSWORD": "x"}
    )
    assert result.ok, [e.as_dict() for e in result.errors]
    registry.close()
