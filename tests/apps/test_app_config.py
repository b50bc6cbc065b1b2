"""Per-device configuration (#16 item 4): layers in order, unset, type checks, camera binding
against the registry, override.json and the sealed cameras file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from appconfig import PASSWORD, add_cameras, build_app, host_of, write_inventory
from appkit import PASSPHRASE

from fleet.apps.config import BadSetting, configure
from fleet.project import Project

APP = "tracker_plain"


@pytest.fixture
def bundle(app_project: Project, tmp_path: Path) -> Path:
    add_cameras(app_project)
    return build_app(app_project, tmp_path / "src")


def _cfg(project: Project, bundle: Path, apps: dict, sets: list[str] | None = None,
         device: str = "berlin-01"):
    folder = write_inventory(project, apps)
    return configure(project, host_of(project, folder, device), bundle, sets or [],
                     inventory=folder)


LAYERED = {
    "defaults": {"label_param": "from-defaults", "max_tracks_param": 1, "min_score_param": 0.1,
                 "draw_param": True, "front_door": "b1-yard"},
    "people": {"max_tracks_param": 2, "min_score_param": 0.2, "draw_param": False},
    "site": {"min_score_param": 0.3, "draw_param": True},
    "berlin-01": {"draw_param": None, "front_door": "tag:entrance"},
}


def test_each_layer_replaces_the_one_below_and_null_unsets(app_project, bundle):
    cfg = _cfg(app_project, bundle, LAYERED, ["min_score_param=0.9"])
    assert cfg.refusal() is None
    vals = cfg.values()
    assert (vals["label_param"]["value"], vals["label_param"]["layer"]) == ("from-defaults",
                                                                          "group")
    assert (vals["max_tracks_param"]["value"], vals["max_tracks_param"]["source"]) == (
        2, "group people" if "yaml" not in vals["max_tracks_param"]["source"]
        else vals["max_tracks_param"]["source"])
    assert "groups.yaml:" in vals["max_tracks_param"]["source"]
    assert "(group people)" in vals["max_tracks_param"]["source"]
    assert (vals["min_score_param"]["value"], vals["min_score_param"]["layer"]) == (0.9, "cli")
    assert [r["layer"] for r in vals["min_score_param"]["replaced"]] == [
        "site", "group", "group", "graph"]
    # the host unset draw_param: back to the graph's false, though the site said true
    assert (vals["draw_param"]["value"], vals["draw_param"]["layer"]) == (False, "host")
    assert vals["draw_param"]["set_as"] is None
    assert "hosts.yaml:" in vals["draw_param"]["source"]
    assert (vals["locked_param"]["value"], vals["locked_param"]["layer"]) == (1.5, "graph")
    assert cfg.cameras() == {"front_door": ["b1-door", "b1-gate"]}
    assert vals["front_door"]["set_as"] == "tag:entrance"


def test_the_command_line_unsets_with_a_tilde_and_types_values(app_project, bundle):
    cfg = _cfg(app_project, bundle, LAYERED, ["label_param=~", "max_tracks_param=7",
                                              "draw_param=yes", "front_door=b1-yard,b1-door"])
    assert cfg.refusal() is None
    vals = cfg.values()
    assert (vals["label_param"]["value"], vals["label_param"]["layer"]) == ("default", "cli")
    assert vals["max_tracks_param"]["value"] == 7 and vals["draw_param"]["value"] is True
    assert cfg.cameras() == {"front_door": ["b1-yard", "b1-door"]}
    over = json.loads(cfg.files()["override.json"])["nodeGraphOverrides"]
    rules = {r["replace"]: [w["name"] for w in r["with"]] for r in over["nodeOverrides"]}
    assert rules["front_door"] == ["b1-yard", "b1-door"]
    declared = {n["name"]: n for n in over["nodes"]}
    assert declared[rules["max_tracks_param"][0]] == {
        "name": "max_tracks_param__value", "interface": "int32", "value": 7}
    assert "locked_param" not in rules  # not overridable: never in the override


def test_the_first_listed_group_wins_and_a_parent_ranks_below_its_group(app_project, bundle):
    apps = {"people": {"label_param": "people"}, "staff": {"label_param": "staff",
                                                          "max_tracks_param": 5},
            "night": {"label_param": "night", "max_tracks_param": 9, "draw_param": True},
            "berlin-01": {"front_door": "b1-door"}}
    vals = _cfg(app_project, bundle, apps).values()
    assert (vals["label_param"]["value"], vals["max_tracks_param"]["value"],
            vals["draw_param"]["value"]) == ("people", 5, True)
    assert "(group staff)" in vals["max_tracks_param"]["source"]


@pytest.mark.parametrize(("sets", "reason"), [
    (["max_tracks_param=many"], "max_tracks_param (int32): expected a number for int32, "
                                "got 'many' (set by -e max_tracks_param)"),
    (["max_tracks_param=2.5"], "max_tracks_param (int32): expected a whole number within int32"),
    (["min_score_param=nan"], "min_score_param (float32): expected a finite number"),
    (["draw_param=maybe"], "draw_param (boolean): expected true or false, got 'maybe'"),
    (["locked_param=2"], "locked_param is not overridable in tracker_plain's graph "
                         "(set by -e locked_param)"),
    (["speed=3"], "speed is not a parameter or camera node of tracker_plain (set by -e speed)"),
    (["front_door=m1-door"], "camera m1-door (node front_door) belongs to device munich-01, "
                             "not berlin-01"),
    (["front_door=nowhere"], "camera nowhere (node front_door) is not in the registry"),
    (["front_door=tag:lobby"], "camera node front_door: tag:lobby matches no camera of "
                               "berlin-01"),
    (["front_door=tag:many,b1-door"], "9 cameras bound to tracker_plain; at most 8"),
])
def test_refusals_name_the_reason(app_project, bundle, sets, reason):
    cfg = _cfg(app_project, bundle, {"berlin-01": {"front_door": "b1-door"}}, sets)
    assert reason in (cfg.refusal() or "")
    assert cfg.sealed() is None


def test_a_wrong_type_in_the_inventory_names_its_file_and_line(app_project, bundle):
    cfg = _cfg(app_project, bundle, {"site": {"max_tracks_param": "lots"},
                                     "berlin-01": {"front_door": "b1-door"}})
    assert "max_tracks_param (int32): expected a number for int32, got 'lots' (set by " \
           in (cfg.refusal() or "")
    assert "groups.yaml:" in (cfg.refusal() or "") and "(group site-berlin)" in cfg.refusal()


def test_an_unbound_camera_node_is_refused(app_project, bundle):
    cfg = _cfg(app_project, bundle, {})
    assert "camera node front_door is bound to no camera" in (cfg.refusal() or "")


def test_tag_selector_with_a_value_takes_only_the_device_own_cameras(app_project, bundle):
    apps = {"people": {"front_door": "tag:entrance"}}
    assert _cfg(app_project, bundle, apps, device="berlin-02").cameras() == {
        "front_door": ["b2-door"]}
    cfg = _cfg(app_project, bundle, apps, ["front_door=tag:floor=2"])
    assert cfg.cameras() == {"front_door": ["b1-gate"]}


@pytest.mark.parametrize("bad", ["novalue", "=3", "a b=1", "x/y=2"])
def test_a_malformed_setting_raises_a_usage_error(app_project, bundle, bad):
    with pytest.raises(BadSetting) as caught:
        _cfg(app_project, bundle, {}, [bad])
    assert caught.value.exit_code == 2 and "expected NODE=VALUE" in caught.value.line()


def test_sealed_holds_the_device_cameras_with_credentials_and_nothing_else_does(
        app_project, bundle):
    cfg = _cfg(app_project, bundle, {"berlin-01": {"front_door": "b1-door"}})
    sealed = json.loads(cfg.sealed() or b"{}")
    by_name = {c["name"]: c for c in sealed["cameras"]}
    assert set(by_name) == {"b1-door", "b1-gate", "b1-yard", "b1-other"} | {
        f"b1-extra{i}" for i in range(8)}
    assert by_name["b1-door"]["password"] == PASSWORD
    assert by_name["b1-door"]["username"] == "admin"
    shown = json.dumps([cfg.summary(), cfg.values(), cfg.cameras()]) + repr(cfg) + \
        cfg.files()["override.json"].decode()
    assert PASSWORD not in shown


def test_explain_shows_each_value_with_its_layer_and_file_line(app_project, bundle):
    from labkit import run_cli

    folder = write_inventory(app_project, LAYERED)
    res = run_cli(app_project.root, "app", "explain", "berlin-01", APP, "-i", str(folder),
                  "-e", "label_param=cli-label", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["version"] == "1.0.0" and doc["refused"] is None
    assert doc["values"]["label_param"]["layer"] == "cli"
    assert doc["values"]["label_param"]["layer"] == "cli"
    assert doc["values"]["label_param"]["replaced"][0]["layer"] == "group"
    assert doc["values"]["min_score_param"]["source"].startswith(f"{folder}/groups.yaml:")
    assert doc["cameras"] == {"front_door": ["b1-door", "b1-gate"]}
    res = run_cli(app_project.root, "app", "explain", "berlin-01", str(bundle), "-i",
                  str(folder))
    assert res.exit_code == 0, res.stderr
    lines = {line.split()[0]: line for line in res.stdout.splitlines() if line.strip()}
    assert "b1-door, b1-gate (tag:entrance)" in lines["front_door"]
    assert " host " in lines["front_door"] and "hosts.yaml:" in lines["front_door"]
    assert "False" in lines["draw_param"] and "host (unset)" in lines["draw_param"]
    assert PASSWORD not in res.stdout + res.stderr


def test_explain_refuses_with_the_reason_and_bad_input_in_one_line(app_project, bundle):
    from labkit import run_cli

    folder = write_inventory(app_project, LAYERED)
    res = run_cli(app_project.root, "app", "explain", "berlin-01", APP, "-i", str(folder),
                  "-e", "front_door=m1-door")
    assert res.exit_code == 1
    assert "refused: camera m1-door (node front_door) belongs to device munich-01" in res.stderr
    res = run_cli(app_project.root, "app", "explain", "berlin-01", APP, "-i", str(folder),
                  "-e", "oops")
    assert res.exit_code == 2 and "expected NODE=VALUE" in res.stderr
    assert "Traceback" not in res.stderr
    res = run_cli(app_project.root, "app", "explain", "nobody", APP, "-i", str(folder))
    assert res.exit_code == 2 and "unknown device(s) in DEVICE: nobody" in res.stderr
    res = run_cli(app_project.root, "app", "explain", "berlin-01", "ghost", "-i", str(folder))
    assert res.exit_code == 2 and "no built bundle of application 'ghost'" in res.stderr


def test_explain_takes_the_newest_built_version_of_an_application(app_project, bundle, tmp_path):
    from labkit import run_cli

    build_app(app_project, tmp_path / "src10", version="1.10.0")
    build_app(app_project, tmp_path / "src9", version="1.9.0")
    folder = write_inventory(app_project, {"berlin-01": {"front_door": "b1-door"}})
    res = run_cli(app_project.root, "app", "explain", "berlin-01", APP, "-i", str(folder),
                  "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["version"] == "1.10.0", res.stderr


def test_inventory_check_names_a_malformed_apps_entry_with_its_line(app_project, bundle):
    from fleet import inventory as inv

    folder = write_inventory(app_project, {"berlin-01": ["min_score_param", 0.5],  # type: ignore
                                           "site": {"bad node!": 1}})
    problems = inv.check(folder)
    assert any("hosts.yaml:" in p and "berlin-01.data.apps.tracker_plain" in p
               for p in problems), problems
    assert any("groups.yaml:" in p and "site-berlin.data.apps.tracker_plain" in p
               for p in problems), problems


def test_configure_many_and_the_plan_diff(app_project, bundle):
    from fleet.apps.config import configure_many, diff

    folder = write_inventory(app_project, {"people": {"front_door": "tag:entrance"}})
    hosts = [host_of(app_project, folder, n) for n in ("berlin-01", "berlin-02")]
    with pytest.raises(BadSetting):
        configure_many(app_project, hosts, bundle, ["bad"])
    first = configure_many(app_project, hosts, bundle, [])
    assert {n: c.cameras() for n, c in first.items()} == {
        "berlin-01": {"front_door": ["b1-door", "b1-gate"]}, "berlin-02": {"front_door": ["b2-door"]}}
    again = configure_many(app_project, hosts, bundle, ["max_tracks_param=6",
                                                        "front_door=tag:floor"])
    before, after = first["berlin-01"].summary(), again["berlin-01"].summary()
    assert diff(before, before) == []
    assert diff(before, after) == [
        {"node": "front_door", "from": ["b1-door", "b1-gate"], "to": ["b1-gate", "b1-yard"],
         "layer": "cli"},
        {"node": "max_tracks_param", "from": 4, "to": 6, "layer": "cli"}]
    assert len(diff(None, after)) == len(after["parameters"]) + len(after["cameras"])


def test_a_camera_package_with_its_own_stream_needs_no_binding(app_project, bundle, tmp_path):
    from panorama_apps import write_app

    from fleet.apps import build as builder

    app = write_app(tmp_path / "pkg", "tracker", "camera_package", video=tmp_path / "v.mp4")
    (tmp_path / "v.mp4").write_bytes(b"")
    built = builder.build(app_project, app, passphrase=PASSPHRASE.encode(), version="2.0.0")
    folder = write_inventory(app_project, {})
    host = host_of(app_project, folder, "berlin-01")
    cfg = configure(app_project, host, built.path, [])
    assert cfg.refusal() is None and cfg.cameras() == {}
    assert configure(app_project, host, built.path, ["front_door=b1-door"]).cameras() == {
        "front_door": ["b1-door"]}


def test_the_bundled_override_is_the_graph_layer_and_unset_returns_to_it(
        app_project, bundle, tmp_path):
    from panorama_apps import write_app

    from fleet.apps import build as builder

    app = write_app(tmp_path / "over", "tracker")
    (app / "graphs" / app.name / "override.json").write_text(json.dumps({"nodeGraphOverrides": {
        "envelopeVersion": "2021-01-01",
        "nodes": [{"name": "strict", "interface": "float32", "value": 0.8}],
        "nodeOverrides": [{"replace": "min_score_param", "with": [{"name": "strict"}]},
                          {"replace": "front_door", "with": [{"name": "b1-yard"}]}]}}))
    built = builder.build(app_project, app, passphrase=PASSPHRASE.encode(), version="3.0.0")
    folder = write_inventory(app_project, {"site": {"min_score_param": 0.3}})
    cfg = configure(app_project, host_of(app_project, folder, "berlin-01"), built.path,
                    ["min_score_param=~"], inventory=folder)
    vals = cfg.values()
    assert cfg.refusal() is None and cfg.cameras() == {"front_door": ["b1-yard"]}
    assert (vals["front_door"]["layer"], vals["front_door"]["source"]) == (
        "graph", f"graphs/{app.name}/override.json")
    assert (vals["min_score_param"]["value"], vals["min_score_param"]["layer"]) == (0.8, "cli")
    assert [r["source"] for r in vals["min_score_param"]["replaced"]][-2:] == [
        f"graphs/{app.name}/override.json",
        f"graphs/{app.name}/graph.json $.nodeGraph.nodes[4].value"]
