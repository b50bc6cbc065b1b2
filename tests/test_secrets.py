"""Encryption at rest for camera passwords: key handling and sealing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fleet.errors import ConfigError
from fleet.secrets import KEY_ENV, SecretBox, generate_key, load_key, mask, secret_box


def test_key_file_is_created_0600_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    first = load_key(tmp_path)
    assert stat.S_IMODE((tmp_path / "secret.key").stat().st_mode) == 0o600
    assert load_key(tmp_path) == first and len(first) == 32


def test_key_file_readable_by_others_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    load_key(tmp_path)
    os.chmod(tmp_path / "secret.key", 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_key(tmp_path)


def test_env_key_wins_and_bad_env_key_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_key()
    monkeypatch.setenv(KEY_ENV, key)
    assert secret_box(tmp_path).key_id == secret_box(tmp_path).key_id
    assert not (tmp_path / "secret.key").exists()
    monkeypatch.setenv(KEY_ENV, "too-short")
    with pytest.raises(ConfigError, match="32 bytes"):
        load_key(tmp_path)


def test_missing_key_without_create_says_how_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match=KEY_ENV):
        load_key(tmp_path, create=False)


def test_seal_is_randomised_bound_to_its_row_and_key() -> None:
    box, other = SecretBox(os.urandom(32)), SecretBox(os.urandom(32))
    a, b = box.seal("hunter2", aad="camera:door"), box.seal("hunter2", aad="camera:door")
    assert a != b and "hunter2" not in a
    assert box.open(a, aad="camera:door") == "hunter2"
    with pytest.raises(ConfigError, match="failed authentication"):
        box.open(a, aad="camera:window")  # copied onto another camera's row
    with pytest.raises(ConfigError, match="another key"):
        other.open(a, aad="camera:door")


def test_mask() -> None:
    assert mask("x") == "***" and mask("") == "" and mask(None) == ""
