"""Must show (#16): a camera password planted in the registry appears in no output, journal,
log, state file or `fleet logs export`; only in the device's own 0600 cameras.json.

Real parts: a 1-site x 2-device lab on OpenSSH, the registry with a sealed password,
`fleet app explain`, the sealed file sent over SSH (`fleet-agent cameras set -`),
`fleet health` and `fleet logs export` in table and --json form. Plan and deploy are the
controller's (#16 item 5-6); their outputs join this grep where they run (see the report).
"""

from __future__ import annotations

import gzip
import io
import json
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from appconfig import build_app
from appkit import PASS, PASSPHRASE
from labkit import default_ssh_kind, run_cli, start_lab
from nornir.core.task import Result, Task

from fleet import firmware
from fleet import inventory as inv
from fleet.agent import agent_for
from fleet.apps.config import configure, push_sealed

PLANTED = "Zq7-planted-CAMERA-pw-41x"
CSV = ("name,device,rtsp_url,username,password,description,tags\n"
       "door,berlin-01,rtsp://127.0.0.1:9/door,admin,password_env:PLANTED_PW,front door,"
       "entrance=\n"
       "yard,berlin-02,rtsp://127.0.0.1:9/yard?user=admin&password={password},admin,"
       "password_env:PLANTED_PW,,\n")


def _texts(path: Path) -> list[tuple[str, bytes]]:
    """A file's bytes, and every member of an archive (tar, zip, gzip) inside it."""
    data = path.read_bytes()
    out = [(str(path), data)]
    if tarfile.is_tarfile(path):
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                handle = tar.extractfile(m) if m.isfile() else None
                if handle:
                    out.append((f"{path}!{m.name}", _gunzip(handle.read())))
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            out += [(f"{path}!{n}", _gunzip(zf.read(n))) for n in zf.namelist()]
    elif data[:2] == b"\x1f\x8b":
        out.append((f"{path}!gunzip", _gunzip(data)))
    return out


def _gunzip(data: bytes) -> bytes:
    try:
        return gzip.GzipFile(fileobj=io.BytesIO(data)).read() if data[:2] == b"\x1f\x8b" \
            else data
    except OSError:
        return data


def _leaks(folder: Path, allowed: set[Path]) -> list[str]:
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        if path in allowed:
            continue
        found += [name for name, data in _texts(path) if PLANTED.encode() in data]
    return found


@pytest.mark.servers
def test_a_planted_camera_password_appears_nowhere_but_the_device_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_RELEASE_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("PLANTED_PW", PLANTED)
    (tmp_path / "proj").mkdir()
    lab = start_lab(tmp_path / "proj", 1, 2, default_ssh_kind())
    try:
        project = lab.project
        root = project.root
        firmware.keygen(project, passphrase=PASSPHRASE.encode())
        bundle = build_app(project, tmp_path / "src")
        (tmp_path / "cameras.csv").write_text(CSV)
        env = {**PASS, "PLANTED_PW": PLANTED}
        outputs = []

        def cli(*args: str, codes: tuple[int, ...] = (0,)) -> None:
            res = run_cli(root, *args, env=env)
            assert res.exit_code in codes, (args, res.stderr)
            outputs.append((" ".join(args), res.stdout + res.stderr))

        cli("devices", "register", "-i", "lab")
        cli("cameras", "import", str(tmp_path / "cameras.csv"))
        cli("cameras", "list", "--json")
        for device, camera in (("berlin-01", "door"), ("berlin-02", "tag:nothing,yard")):
            cli("app", "explain", device, "tracker_plain", "-i", "lab", "-e",
                f"front_door={camera}", "--json", codes=(0, 1))
            cli("app", "explain", device, str(bundle), "-i", "lab", "-e",
                f"front_door={camera}", codes=(0, 1))

        nr = inv.select(project, inv.Selection.of("lab"))
        configs = {name: configure(project, host, bundle, [f"front_door={cam}"])
                   for name, host, cam in ((n, h, {"berlin-01": "door", "berlin-02": "yard"}[n])
                                           for n, h in nr.inventory.hosts.items())}
        for cfg in configs.values():
            assert cfg.refusal() is None
            outputs.append(("summary", json.dumps([cfg.summary(), cfg.values()])))
            outputs.append(("files", b"".join(cfg.files().values()).decode()))

        def send(task: Task) -> Result:
            return Result(host=task.host, result=push_sealed(agent_for(task),
                                                             configs[task.host.name]))

        sent = nr.run(task=send)
        nr.close_connections()
        assert not sent.failed, {n: r[0].exception for n, r in sent.items()}
        assert sent["berlin-01"][0].result == ["door"]
        cli("health", "-i", "lab", "--json", codes=(0, 1))
        cli("health", "-i", "lab", codes=(0, 1))
        cli("logs", "export", "-i", "lab", "--out", str(tmp_path / "export"), "--json")

        sealed = {lab.root(n) / "etc/fleet/cameras.json" for n in ("berlin-01", "berlin-02")}
        for path in sealed:  # the one place it must be: the device's own file, 0600
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert PLANTED in path.read_text()
        leaked = [name for name, text in outputs if PLANTED in text]
        leaked += _leaks(root, sealed) + _leaks(tmp_path / "export", set())
        assert not leaked, leaked
        assert any(p.is_file() for p in (tmp_path / "export").rglob("*"))
    finally:
        lab.down()
