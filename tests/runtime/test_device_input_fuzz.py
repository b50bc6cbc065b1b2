"""Every file the device side parses, fed wrong types, wrong encodings and truncations:
refused with its own error (one line, an exit code), never an exception that escapes.

The wrong-type places are a seeded sample: FLEET_FUZZ_SEED=<n> replays a run.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fleet_runtime import bundle, runtime_cli
from fleet_runtime.bundle import BundleError, Keyring

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures_bundle import make_bundle, make_device, new_key, signed  # noqa: E402
from fuzzkit import as_json, encodings, one_line_error, seed, truncations, wrong_types  # noqa: E402
from runtime_overrides import override_doc  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "runtime" / "examples"
AGENT = str(Path(sys.executable).parent / "fleet-agent")
SEED = seed()
KEY = new_key()
Case = tuple[str, bytes]


def cases(doc: Any, text: bytes, count: int = 60) -> list[Case]:
    rng = random.Random(SEED)
    return ([(label, as_json(d)) for label, d in wrong_types(doc, rng, count)]
            + encodings(text.decode()) + truncations(text))


def check_all(run: Callable[[bytes], str | None], inputs: list[Case]) -> None:
    print(f"FLEET_FUZZ_SEED={SEED}")
    broken = []
    for label, data in inputs:
        try:
            problem = run(data)
        except Exception as exc:  # noqa: BLE001 - any escape is the failure being looked for
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            broken.append(f"{label}: {problem}")
    assert not broken, f"FLEET_FUZZ_SEED={SEED}\n" + "\n".join(broken[:20])


def _manifest_doc() -> tuple[dict[str, Any], bytes]:
    with tarfile.open(fileobj=io.BytesIO(make_bundle(KEY))) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        raw = member.read()
    return json.loads(raw), raw


def _signed_bundle(raw: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("manifest.json", raw), ("manifest.sig", KEY.sign(raw))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_bundle_manifests_signed_by_a_trusted_key() -> None:
    """Signed, so every check past the signature runs on the bad values."""
    doc, raw = _manifest_doc()
    ring = Keyring()
    ring.add(KEY.public_key())
    inputs = [(label, _signed_bundle(data)) for label, data in cases(doc, raw, 120)]
    inputs += [(f"bundle-{label}", data) for label, data in truncations(make_bundle(KEY), 16)]
    inputs.append(("hooks-list", _signed_bundle(signed(KEY, {
        **doc, "hooks": {"selftest": ["opt/edgefleet/VERSION"]}})[0])))

    def run(data: bytes) -> str | None:
        try:
            bundle.read_bundle(io.BytesIO(data), ring)
        except BundleError as exc:
            return None if exc.message and "\n" not in exc.message else repr(exc.message)
        return None

    check_all(run, inputs)


def test_agent_install_of_a_manifest_whose_hooks_are_lists(tmp_path: Path) -> None:
    device = make_device(tmp_path / "dev1", KEY)
    doc, _ = _manifest_doc()
    raw, _ = signed(KEY, {**doc, "hooks": {"selftest": ["opt/edgefleet/VERSION"]}})
    path = device.staging / "x.bundle"
    path.write_bytes(_signed_bundle(raw))
    proc = subprocess.run([AGENT, "install", str(path)], capture_output=True, text=True,
                          env={**os.environ, "FLEET_ROOT": str(device.root)}, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["ok"] is False and "hook selftest must name one payload file" in str(answer)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("apps") / "color_classifier"
    shutil.copytree(EXAMPLES / "color_classifier", dest)
    model = dest / "packages/123456789012-COLOR_MODEL-1.0/model"
    model.mkdir(parents=True, exist_ok=True)
    (model / "color.onnx").write_bytes(b"onnx")
    return dest


def _validate(capsys: pytest.CaptureFixture[str], *argv: str) -> str | None:
    code = runtime_cli.main(["validate", *argv])
    out, err = capsys.readouterr()
    if code not in (0, 1, 2) or "Traceback" in err:
        return f"exit {code}: {err[-300:]!r}"
    if code and not out.strip():
        return "refused without saying why"
    return None


APP_FILES = [
    "graphs/color_classifier/graph.json",
    "packages/123456789012-COLOR_CODE-1.0/package.json",
    "packages/123456789012-COLOR_CODE-1.0/descriptor.json",
    "packages/123456789012-COLOR_MODEL-1.0/package.json",
    "packages/123456789012-COLOR_MODEL-1.0/descriptor.json",
]


@pytest.mark.parametrize("rel", APP_FILES, ids=[p.split("/")[-1] + f"-{i}"
                                                for i, p in enumerate(APP_FILES)])
def test_application_files(app: Path, capsys: pytest.CaptureFixture[str], rel: str) -> None:
    path = app / rel
    good = path.read_bytes()

    def run(data: bytes) -> str | None:
        path.write_bytes(data)
        return _validate(capsys, str(app))

    try:
        check_all(run, cases(json.loads(good), good))
    finally:
        path.write_bytes(good)


def test_override_json(app: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    doc = override_doc(["cam_a", "cam_b"], threshold=0.8)
    path = tmp_path / "override.json"

    def run(data: bytes) -> str | None:
        path.write_bytes(data)
        return _validate(capsys, str(app), "--override", str(path))

    check_all(run, cases(doc, as_json(doc)))


CAMERAS = {"cameras": [{"name": "camera_node", "url": "synthetic:32x24@5",
                        "username": "u", "password": "p"}]}


def test_device_cameras_file(tmp_path: Path) -> None:
    from fleet_runtime.pipeline.runner import load_cameras_file
    from fleet_runtime.pipeline.sources import SourceError

    path = tmp_path / "cameras.json"

    def run(data: bytes) -> str | None:
        path.write_bytes(data)
        path.chmod(0o600)
        try:
            load_cameras_file(path)
        except SourceError as exc:
            return None if "\n" not in str(exc) else repr(str(exc))
        return None

    check_all(run, cases(CAMERAS, as_json(CAMERAS)))


@pytest.mark.parametrize("data", [b"null", b'{"cameras": [{"name": "camera_node"}]}',
                                  b'{"cameras": {"camera_node": {"url": "caf\xe9"}}}'])
def test_fleet_runtime_run_with_a_bad_cameras_file(color_app: Path, tmp_path: Path,
                                                   data: bytes) -> None:
    path = tmp_path / "cameras.json"
    path.write_bytes(data)
    proc = subprocess.run([sys.executable, "-m", "fleet_runtime.runtime_cli", "run",
                           str(color_app), "--cameras", str(path), "--duration", "0.1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode in (1, 2) and one_line_error(proc.returncode, proc.stderr) is None, \
        proc.stderr
    assert "cameras.json" in proc.stderr


def test_rtsp_probe_requests() -> None:
    from fleet_runtime.agent.protocol import AgentError
    from fleet_runtime.agent.rtsp import read_request

    doc = {"cameras": [{"name": "door", "url": "rtsp://127.0.0.1:8554/door",
                        "username": "u", "password": "p"}], "timeout": 2.5}
    text = json.dumps(doc).encode()

    def run(data: bytes) -> str | None:
        try:
            read_request(data.decode("utf-8", "replace"))
        except AgentError as exc:
            return None if "\n" not in exc.message else repr(exc.message)
        return None

    check_all(run, cases(doc, text) + [("timeout-nan", b'{"cameras": [{"url": "x"}], '
                                                        b'"timeout": NaN}')])


DEVICE_FILES = ["etc/fleet/device.json", "var/lib/fleet/boot.json", "run/fleet/runtime.json",
                "run/fleet/boot-time.json"]


@pytest.mark.parametrize("rel", DEVICE_FILES, ids=[p.split("/")[-1] for p in DEVICE_FILES])
def test_agent_answers_one_json_line_whatever_its_files_hold(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        rel: str) -> None:
    """A damaged device file makes a command fail with its one JSON answer, never a traceback."""
    from fleet_runtime.agent.cli import main

    device = make_device(tmp_path / "dev1", KEY)
    monkeypatch.setenv("FLEET_ROOT", str(device.root))
    path = device.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    good: dict[str, Any] = json.loads(path.read_bytes()) if path.exists() else \
        {"apps": {"color": {"http_port": 1}}, "boot_time": 1.0}

    def run(data: bytes) -> str | None:
        path.write_bytes(data)
        capsys.readouterr()  # what came before (the seed line)
        for command in (["info"], ["slots"], ["health"]):
            code = main(command)
            out, err = capsys.readouterr()
            lines = out.strip().splitlines()
            if code not in (0, 1, 2) or len(lines) != 1 or "Traceback" in err:
                return f"{command[0]}: exit {code}, {len(lines)} lines: {(out + err)[-300:]!r}"
            answer = json.loads(lines[0])
            if answer["ok"] is not (code == 0):
                return f"{command[0]}: exit {code} but ok={answer['ok']}"
        return None

    check_all(run, cases(good, as_json(good), count=15))


@pytest.mark.parametrize("data", [b"{", b"[1]", b'{"apps": [1]}', b"\xff\xfe"])
def test_runtime_registry_that_is_damaged_is_written_anew(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    device = make_device(tmp_path / "dev1")
    monkeypatch.setenv("FLEET_ROOT", str(device.root))
    registry = device.run / "runtime.json"
    registry.parent.mkdir(parents=True, exist_ok=True)
    registry.write_bytes(data)
    assert runtime_cli._register("color", 8080) is True
    assert json.loads(registry.read_text()) == {"apps": {"color": {"http_port": 8080}}}


def _log_bundle(path: Path, manifest: bytes, log: bytes = b"line\n") -> None:
    with tarfile.open(path, mode="w:gz") as tar:
        for name, data in (("logs/manifest.json", manifest), ("logs/agent.log", log)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_log_bundle_manifests(tmp_path: Path) -> None:
    """A device makes the log bundle the controller checks: any manifest is refused cleanly."""
    import hashlib

    from fleet_runtime import logs

    log = b"line\n"
    doc = {"format": logs.BUNDLE_FORMAT, "device": "dev1", "files": [
        {"path": "agent.log", "size": len(log), "sha256": hashlib.sha256(log).hexdigest()}]}
    path = tmp_path / "logs.tar.gz"
    _log_bundle(path, as_json(doc))
    assert logs.verify_bundle(path)["device"] == "dev1"

    def run(data: bytes) -> str | None:
        _log_bundle(path, data)
        try:
            logs.verify_bundle(path)
        except logs.BundleError:
            return None
        return None

    check_all(run, cases(doc, as_json(doc)))
