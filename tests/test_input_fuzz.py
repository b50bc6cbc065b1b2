"""Every file the controller parses, fed wrong types, wrong encodings and truncations:
each gets one line and exit 1 or 2 (or is accepted), never a traceback.

The wrong-type places are a seeded sample: the seed is printed, and
FLEET_FUZZ_SEED=<n> replays a run.
"""

from __future__ import annotations

import io
import json
import random
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fixtures_bundle import make_bundle, new_key
from fixtures_provisioning import PASSPHRASE, make_factory, members_of, resign, write_zip
from fuzzkit import as_json, encodings, one_line_error, seed, truncations, wrong_types
from labkit import RELEASE_PASS, keyed_project, run_cli
from ruamel.yaml import YAML

from fleet.errors import ConfigError
from fleet.project import CONFIG_SCHEMA, Project, _defaults
from fleet.rollout.policy import load_policy

REPO = Path(__file__).resolve().parents[1]
PASS = RELEASE_PASS
SEED = seed()
Case = tuple[str, bytes]


def yaml_doc(path: Path) -> Any:
    return json.loads(json.dumps(YAML(typ="safe").load(path.read_text())))


def cases(doc: Any, text: bytes, count: int = 40) -> list[Case]:
    rng = random.Random(SEED)
    return ([(label, as_json(d)) for label, d in wrong_types(doc, rng, count)]
            + encodings(text.decode()) + truncations(text))


def check_all(run: Callable[[bytes], tuple[int, str]], inputs: list[Case],
              promise: Callable[[int, str], str | None] = one_line_error) -> None:
    print(f"FLEET_FUZZ_SEED={SEED}")
    broken = []
    for label, data in inputs:
        try:
            code, stderr = run(data)
        except Exception as exc:  # noqa: BLE001 - any escape is the failure being looked for
            broken.append(f"{label}: {type(exc).__name__}: {exc}")
            continue
        if problem := promise(code, stderr):
            broken.append(f"{label}: {problem}")
    assert not broken, f"FLEET_FUZZ_SEED={SEED}\n" + "\n".join(broken[:20])


def listed_problems(code: int, stderr: str) -> str | None:
    """Commands that report every problem, one a line (inventory check, cameras import)."""
    if "Traceback" in stderr or code not in (0, 1, 2):
        return f"exit {code}: {stderr[-300:]!r}"
    return None


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return keyed_project(tmp_path)


def test_fleet_yaml(project: Project) -> None:
    doc = json.loads(json.dumps(_defaults(CONFIG_SCHEMA, {})))
    path = project.root / "fleet.yaml"

    def run(data: bytes) -> tuple[int, str]:
        path.write_bytes(data)
        res = run_cli(project.root, "inventory", "list", "-i", "example")
        return res.exit_code, res.stderr

    check_all(run, cases(doc, as_json(doc), count=30))


@pytest.mark.parametrize("name", ["hosts.yaml", "groups.yaml", "defaults.yaml"])
def test_inventory_files(project: Project, name: str) -> None:
    path = project.inventories / "example" / name
    text = path.read_bytes()
    inputs = cases(yaml_doc(path), text, count=25)

    def listing(data: bytes) -> tuple[int, str]:
        path.write_bytes(data)
        res = run_cli(project.root, "inventory", "list", "-i", "example")
        return res.exit_code, res.stderr

    def checking(data: bytes) -> tuple[int, str]:
        path.write_bytes(data)
        res = run_cli(project.root, "inventory", "check", "-i", "example")
        return res.exit_code, res.stderr

    check_all(listing, inputs)
    check_all(checking, inputs, listed_problems)


def test_firmware_recipe(project: Project) -> None:
    path = project.firmware / "lab-1.1.0.yaml"
    text = path.read_bytes()

    def run(data: bytes) -> tuple[int, str]:
        path.write_bytes(data)
        res = run_cli(project.root, "firmware", "build", str(path), env=PASS)
        return res.exit_code, res.stderr

    check_all(run, cases(yaml_doc(path), text))


def test_rollout_policy_file(tmp_path: Path) -> None:
    doc = {"batches": [1, "10%", "50%"], "max_fail_percentage": 10, "max_failures": 3,
           "concurrency": 4, "per_site_concurrency": 2, "order": "shuffle", "seed": 7,
           "canary_tags": ["canary"], "offline": "wait", "offline_wait": 30,
           "device_timeout": 600, "pause_after_batch": False}
    path = tmp_path / "policy.yaml"

    def run(data: bytes) -> tuple[int, str]:
        path.write_bytes(data)
        try:
            load_policy(path)
        except ConfigError as exc:
            return exc.exit_code, exc.line() + "\n"
        return 0, ""

    check_all(run, cases(doc, as_json(doc)))


def test_camera_csv(project: Project, tmp_path: Path) -> None:
    source = REPO / "inventories/example/cameras.csv"
    text = source.read_bytes()
    rows = [line.split(",") for line in text.decode().splitlines()[:3]]
    inputs = encodings(text.decode()) + truncations(text) + [
        ("one-column", b"name\nx\n"), ("ragged", b"name,device\na,b,c,d\n"),
        ("quote", b'name,device,rtsp_url\n"a,b\n'), ("huge-field", b"name\n" + b"x" * 200_000),
        ("header-only", ",".join(rows[0]).encode() + b"\n"),
    ]
    path = tmp_path / "cameras.csv"

    def run(data: bytes) -> tuple[int, str]:
        path.write_bytes(data)
        res = run_cli(project.root, "cameras", "import", str(path), "--dry-run")
        return res.exit_code, res.stderr

    check_all(run, inputs, listed_problems)


def _bundle_with_manifest(raw: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("manifest.json", raw), ("manifest.sig", b"s" * 64)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_bundle_manifest_inspect_and_verify(project: Project, tmp_path: Path) -> None:
    good = make_bundle(new_key())
    with tarfile.open(fileobj=io.BytesIO(good)) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        raw = member.read()
    doc = json.loads(raw)
    inputs = [(label, _bundle_with_manifest(data)) for label, data in cases(doc, raw)]
    inputs += [(f"bundle-{label}", data) for label, data in truncations(good, 16)]
    inputs.append(("hooks-list", _bundle_with_manifest(as_json(
        {**doc, "hooks": {"selftest": ["opt/edgefleet/VERSION"]}}))))
    path = tmp_path / "x.bundle"

    def run(data: bytes) -> tuple[int, str]:
        path.write_bytes(data)
        res = run_cli(project.root, "firmware", "inspect", str(path))
        if res.exit_code == 0:
            res = run_cli(project.root, "firmware", "verify", str(path))
        return res.exit_code, res.stderr

    check_all(run, inputs)


def test_provisioning_archive_manifest(tmp_path: Path) -> None:
    factory = make_factory(tmp_path / "project")
    archive = factory.build().path
    members = members_of(archive)
    doc = json.loads(members["manifest.json"])
    key = factory.ca.key
    rng = random.Random(SEED)
    inputs: list[Case] = []
    for label, bad in wrong_types(doc, rng, count=40):
        if isinstance(bad, dict):  # signed, so the device's checks past the signature run too
            fields = {k: v for k, v in bad.items() if k != "members"}
            signed = resign(members, key, **fields)
        else:
            signed = {**members, "manifest.json": as_json(bad)}
        inputs.append((label, _zip(tmp_path, signed)))
    for label, data in encodings(members["manifest.json"].decode()) + truncations(
            members["manifest.json"]):
        inputs.append((f"manifest-{label}", _zip(tmp_path, {**members, "manifest.json": data})))
    inputs.append(("install_by-not-a-date",
                   _zip(tmp_path, resign(members, key, install_by="next tuesday"))))
    inputs += [(f"zip-{label}", data) for label, data in truncations(archive.read_bytes())]
    path = tmp_path / "edgefleet-cam-01.zip"

    def run(data: bytes) -> tuple[int, str]:
        path.write_bytes(data)
        res = run_cli(factory.project.root, "provision", "verify", str(path),
                      env={"FLEET_CA_PASSPHRASE": PASSPHRASE.decode()})
        return res.exit_code, res.stderr

    check_all(run, inputs)


def _zip(tmp_path: Path, members: dict[str, bytes]) -> bytes:
    return write_zip(tmp_path / "scratch.zip", members).read_bytes()


@pytest.mark.parametrize("name", ["porto-store-02\n", "porto[/]store", "a[red]b\x1b[2J"])
def test_odd_characters_in_names_stay_on_one_line_and_are_not_markup(
        project: Project, name: str) -> None:
    hosts = project.inventories / "example/hosts.yaml"
    hosts.write_text(hosts.read_text().replace("porto-store-02:", json.dumps(name) + ":", 1))
    for command in ("list", "check"):
        res = run_cli(project.root, "inventory", command, "-i", "example")
        assert res.exit_code in (1, 2) and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert "\x1b" not in res.stderr and "Traceback" not in res.stderr


def test_heartbeats_of_the_wrong_shape_make_the_device_offline_not_the_sweep_fail() -> None:
    """A device writes its own heartbeat (MQTT or shadow): `fleet health` must survive any."""
    from fleet.heartbeats import OFFLINE, _Collector, to_health

    now = 1_000_000.0
    beat = {"device": "d1", "time": now - 5, "interval_s": 30, "verdict": "healthy",
            "reason": "", "software": "1.0.0", "slot": "a", "seq": 3,
            "checks": [{"name": "disk", "status": "ok"}]}
    assert to_health("d1", "s", beat, now).verdict == "healthy"
    broken = []
    for label, bad in wrong_types(beat, random.Random(SEED), count=80):
        collector = _Collector()
        try:
            collector.on_heartbeat("fleet/s/d1/health", beat)
            collector.on_heartbeat("fleet/s/d1/health", bad)
            health = to_health("d1", "s", bad, now)
        except Exception as exc:  # noqa: BLE001 - any escape is the failure being looked for
            broken.append(f"{label}: {type(exc).__name__}: {exc}")
            continue
        if "malformed" in health.reason and collector.beats["d1"] is not beat:
            broken.append(f"{label}: a malformed beat replaced a good one")
        if "malformed" in health.reason and health.verdict != OFFLINE:
            broken.append(f"{label}: a malformed beat is {health.verdict}")
    assert not broken, f"FLEET_FUZZ_SEED={SEED}\n" + "\n".join(broken[:20])
