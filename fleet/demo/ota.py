"""Demo step for OTA: build a signed bundle, upgrade one lab device, watch a bad one roll back."""

from __future__ import annotations

import os

from fleet.demo import Demo
from fleet.firmware import PASSPHRASE_ENV

DEMO_PASSPHRASE = "edgefleet-demo-only"  # noqa: S105 - demo key only, stated in the demo  # the demo's own key; real keys get a real passphrase


def step_ota(demo: Demo) -> None:
    os.environ.setdefault(PASSPHRASE_ENV, DEMO_PASSPHRASE)
    demo.say("Release keys are Ed25519, apart from the CA; lab devices trust certs/release/*.pub.")
    if not list((demo.project / "certs/release").glob("*.pub")):
        demo.fleet("firmware", "keygen", "--install-lab")
    demo.fleet("firmware", "build", "firmware/lab-1.1.0.yaml")
    demo.fleet("firmware", "inspect", "out/firmware/edgefleet-os-1.1.0.bundle")
    demo.say("Upload (resumable, SHA-256 checked), verify + write the inactive slot, trial boot, "
             "health and version gate, commit:")
    demo.fleet("ota", "install", "berlin-01", "out/firmware/edgefleet-os-1.1.0.bundle", "-i", "lab")
    demo.say("Now a bundle whose self-test fails after boot: the device is rolled back "
             "automatically (this command exits 1 on purpose).")
    demo.fleet("firmware", "build", "firmware/lab-1.2.0-broken.yaml")
    demo.fleet("ota", "install", "berlin-01", "out/firmware/edgefleet-os-1.2.0.bundle", "-i", "lab",
               check=False)
    demo.fleet("health", "-i", "lab", "--limit", "berlin-01", check=False)
