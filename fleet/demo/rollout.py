"""Demo step for rollouts: a new version across 3 lab sites, canary first, one rolled back."""

from __future__ import annotations

import os
from pathlib import Path

from fleet.demo import Demo
from fleet.firmware import PASSPHRASE_ENV

VERSION = "1.3.0"
UNHAPPY = "lisbon-02"
# The new image's self-test fails on one unit (its camera needs a codec 1.3.0 dropped), so
# that device boots the new slot, fails, and is rolled back: a failure the threshold counts.
RECIPE = """\
name: edgefleet-os
version: {version}
description: runtime {version}; its self-test fails on {unhappy} (demo)
hardware: [jetson-xavier-nx, jetson-orin-nano, jetson-orin-agx]
arch: aarch64
min_version: 1.0.0
payload: {payload}
generate:
  opt/edgefleet/VERSION: "{{version}}\\n"
  opt/edgefleet/bin/selftest: |
    #!/bin/sh
    if grep -q '"name": "{unhappy}"' "$FLEET_ROOT/etc/fleet/device.json"; then
      echo "camera stream is H.265: the 1.3.0 pipeline cannot decode it" >&2; exit 1
    fi
    echo "selftest ok"
hooks:
  selftest: opt/edgefleet/bin/selftest
"""
POLICY = ["--batches", "1,10%,100%", "--canary-tag", "canary", "--concurrency", "3",
          "--per-site-concurrency", "1", "--max-fail-percentage", "25"]


def write_recipe(project: Path) -> Path:
    folder = project / "out" / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    recipe = folder / f"edgefleet-os-{VERSION}.yaml"
    recipe.write_text(RECIPE.format(version=VERSION, unhappy=UNHAPPY,
                                    payload=(project / "firmware/lab-image").resolve()))
    return recipe


def step_rollout(demo: Demo) -> None:
    os.environ.setdefault(PASSPHRASE_ENV, "edgefleet-demo-only")
    if not list((demo.project / "certs/release").glob("*.pub")):
        demo.fleet("firmware", "keygen", "--install-lab")
    demo.fleet("firmware", "build", str(write_recipe(demo.project)))
    bundle = f"out/firmware/edgefleet-os-{VERSION}.bundle"
    demo.say("A rollout is a selection + a bundle + a policy. `plan` shows the batches "
             "(Ansible `serial`: the canary, 10% of the fleet, then the rest) and touches nothing:")
    demo.fleet("ota", "plan", bundle, "-i", "lab", *POLICY)
    demo.say(f"Now for real: 3 at a time, 1 per site, every change journaled. {UNHAPPY}'s "
             "self-test fails after its reboot, so it is rolled back and counted against "
             "max_fail_percentage (25%): 1 of 7 in its batch does not stop the rollout "
             "(this command exits 1 on purpose: one device failed).")
    demo.fleet("ota", "rollout", bundle, "-i", "lab", *POLICY, check=False)
    demo.say("The journal (.fleet/rollouts/<id>.jsonl) is the record: `status` replays it, "
             "`resume` continues after a crash, `retry --failed` reruns the rest.")
    demo.fleet("ota", "status")
