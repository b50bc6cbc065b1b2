"""Demo steps for the foundation: bring up the lab, show inventory and health."""

from __future__ import annotations

from fleet.demo import Demo


def step_lab(demo: Demo) -> None:
    demo.say("A lab device is a real fleet-agent behind a real SSH server on 127.0.0.1;"
             " host keys are pinned in .fleet/known_hosts, never trusted on first use.")
    demo.fleet("lab", "up", "--sites", "3", "--devices-per-site", "3")
    demo.fleet("inventory", "list", "-i", "lab")


def step_health(demo: Demo) -> None:
    demo.say("Health runs the agent's checks on every device in parallel over SSH.")
    demo.fleet("health", "-i", "lab")
