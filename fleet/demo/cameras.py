"""Demo step for the registry: register the lab devices, import their cameras from CSV."""

from __future__ import annotations

import os
import secrets

from fleet.demo import Demo


def step_registry(demo: Demo) -> None:
    from fleet.cameras import sample_csv
    from fleet.lab import Lab
    from fleet.project import Project

    demo.say(
        "The registry records every device (SQLite in .fleet/, or AWS IoT things)."
        " Registering is idempotent: run it again any time."
    )
    demo.fleet("devices", "register", "-i", "lab")
    demo.say("`refresh` asks each agent over SSH what it runs: status, software, last seen.")
    demo.fleet("devices", "refresh", "-i", "lab")
    demo.fleet("devices", "list", "--site", "berlin")
    project = Project.locate(demo.project)
    devices = [{"name": d.name, "site": d.site} for d in Lab(project).devices().values()]
    csv_path = project.state_dir / "lab" / "cameras.csv"
    csv_path.write_text(sample_csv(sorted(devices, key=lambda d: d["name"])), encoding="utf-8")
    # The CSV names the variable, never the password; it is encrypted at rest and shown as ***.
    os.environ.setdefault("LAB_CAMERA_PASSWORD", secrets.token_urlsafe(12))
    demo.say(
        "Operators keep cameras in spreadsheets. A file with a bad row changes nothing"
        " and names the row and column:"
    )
    bad = csv_path.with_name("cameras-with-a-typo.csv")
    bad.write_text(
        csv_path.read_text(encoding="utf-8").replace(":8554/", ":85540/", 1), encoding="utf-8"
    )
    demo.fleet("cameras", "import", str(bad), check=False)
    demo.say(
        "The corrected file imports in one transaction (Panorama: one API call per camera"
        " at 5 requests/s, passwords typed on a prompt)."
    )
    demo.fleet("cameras", "import", str(csv_path), "--dry-run")
    demo.fleet("cameras", "import", str(csv_path))
    first_site = sorted({d["site"] for d in devices})[0]
    demo.fleet("cameras", "list", "--site", first_site)
