"""Fixtures for `fleet app`: a project with a release key, and applications written the way
AWS's Panorama samples are (tests/runtime/panorama_apps.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))  # for panorama_apps

from appkit import PASSPHRASE  # noqa: E402

from fleet import firmware  # noqa: E402
from fleet.project import Project  # noqa: E402


@pytest.fixture
def app_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    """A fleet project with a release key (the passphrase in the environment)."""
    monkeypatch.setenv("FLEET_RELEASE_PASSPHRASE", PASSPHRASE)
    (tmp_path / "project").mkdir()
    project = Project.locate(tmp_path / "project")
    firmware.keygen(project, passphrase=PASSPHRASE.encode())
    return project
