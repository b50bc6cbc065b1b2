"""Demo step: heartbeats over MQTT, the health table from them, and a log bundle export."""

from __future__ import annotations

import tarfile
import time
from pathlib import Path

from fleet_runtime.layout import atomic_write_json
from fleet_runtime.logs import verify_bundle

from fleet.demo import Demo
from fleet.errors import FleetError
from fleet.project import Project

PLANTED = "Demo-Cam-Pa55"


def plant_secret(project: Project, device: str) -> None:
    """A camera password in the device's secrets, and an application that logs it by mistake."""
    from fleet.lab import Lab

    lay = Lab(project).layout(device)
    atomic_write_json(lay.etc / "cameras.json", {"cameras": [
        {"name": "dock", "url": "rtsp://10.1.1.9/stream1", "username": "admin",
         "password": PLANTED}]}, mode=0o600)
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    (lay.logs / "apps").mkdir(parents=True, exist_ok=True)
    with (lay.logs / "apps/people-counter.log").open("a") as fh:
        fh.write(f"{now} ERROR people-counter: DESCRIBE failed for "
                 f"rtsp://admin:{PLANTED}@10.1.1.9/stream1 (401)\n")


def wait_for_heartbeats(project: Project, expected: set[str], timeout: float = 30.0) -> int:
    """Until every expected device has a retained heartbeat (each check is a broker round trip)."""
    from fleet import heartbeats

    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline and not expected <= seen:
        seen = set(heartbeats.latest(heartbeats.settings_for(project)))
    return len(expected & seen)


def bundles_with(folder: Path, secret: bytes) -> int:
    count = 0
    for path in folder.rglob("*.tar.gz"):
        with tarfile.open(path) as tar:
            count += any(secret in tar.extractfile(m).read()  # type: ignore[union-attr]
                         for m in tar if m.isfile())
    return count


def step_heartbeats_and_logs(demo: Demo) -> None:
    from fleet.lab import Lab

    project = Project.locate(demo.project)
    demo.say("Heartbeats: mosquitto with mutual TLS from a lab CA; each device's `fleet-agent "
             "daemon` publishes its health with its own certificate, and the broker's ACL lets "
             "it write only under its own name.")
    demo.fleet("lab", "up", "--sites", "3", "--devices-per-site", "3", "--mqtt", "--heartbeat", "5")
    names = {n for n in Lab(project).devices() if Lab(project).layout(n).device_json.exists()}
    got = wait_for_heartbeats(project, names)
    demo.say(f"{got}/{len(names)} devices heartbeating. The same table, from heartbeats, no SSH:")
    demo.fleet("health", "-i", "lab", "--source", "mqtt", check=False)
    first = sorted(names)[0]
    plant_secret(project, first)
    demo.say(f"A site calls. We planted a camera password in {first}'s secrets and in an "
             "application log, then export every device's logs (redacted on the device):")
    out = demo.project / "out" / "logs"
    demo.fleet("logs", "export", "-i", "lab", "--since", "24h", "--out", str(out), check=False)
    show_bundle(demo, out, first)


def show_bundle(demo: Demo, out: Path, device: str) -> None:
    paths = sorted(out.rglob(f"{device}-*.tar.gz"))
    if not paths:
        raise FleetError(f"demo: no log bundle for {device} under {out}")
    manifest = verify_bundle(paths[-1])
    span = manifest["time_range"]
    demo.say(f"{paths[-1].relative_to(demo.project)}: {len(manifest['files'])} files, "
             f"{manifest['bytes']} bytes of logs from {span['start']} to {span['end']}, "
             "every SHA-256 verified against manifest.json:")
    for f in manifest["files"]:
        demo.say(f"  {f['path']:<45} {f['size']:>9} B  {f['sha256'][:16]}…")
    leaked = bundles_with(out, PLANTED.encode())
    demo.say(f"The planted password appears in {leaked} of "
             f"{len(list(out.rglob('*.tar.gz')))} bundles.")
