"""Demo step: the face-blur example as a signed application bundle; a tampered copy refused."""

from __future__ import annotations

from pathlib import Path

from fleet.demo import Demo
from fleet.demo.runtime import _prepare
from fleet.errors import FleetError


def step_app_bundle(demo: Demo) -> None:
    demo.say("An application travels to devices as a signed bundle: the same folder the runtime"
             " just ran, validated first, every file named by SHA-256, signed with the release key"
             " the OTA step made. A device refuses a bundle whose bytes changed.")
    work = demo.project / ".fleet" / "demo-runtime"
    work.mkdir(parents=True, exist_ok=True)
    app, _ = _prepare(work)
    demo.fleet("app", "build", str(app), "--version", "1.0.0")
    bundle = demo.project / "apps" / "face_blur-1.0.0.app"
    demo.fleet("app", "verify", str(bundle))
    tampered = bundle.with_name("face_blur-1.0.0-tampered.app")
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, somewhere in the model
    tampered.write_bytes(bytes(data))
    try:
        refused = demo.fleet("app", "verify", str(tampered), check=False)
    finally:
        Path(tampered).unlink(missing_ok=True)
    if refused.returncode != 2:
        raise FleetError(f"demo: a tampered bundle was not refused (exit {refused.returncode})")
    demo.say("[green]the tampered copy is refused (exit 2), with the file and the reason[/green]")
    demo.fleet("app", "list")
