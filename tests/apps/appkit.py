"""Shared by the `fleet app` tests: the release key passphrase they use."""

from __future__ import annotations

PASSPHRASE = "correct-horse-battery"
PASS = {"FLEET_RELEASE_PASSPHRASE": PASSPHRASE}
