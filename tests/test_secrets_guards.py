"""Secret sealing guards that mutation testing found unchecked (docs/promises.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleet.errors import ConfigError
from fleet.secrets import KEY_ENV, SecretBox, _b64e, load_key, rotate_key

# Sealed once with GOLDEN_KEY: registries already hold tokens like this one, so the format
# (prefix, key id, nonce + ciphertext) must keep opening.
GOLDEN_KEY = bytes(range(32))
GOLDEN_TOKEN = "v1.3a14f047f93d.8yiWp6-_PRISGZU1rrAvDwDFcovgVvA4NFucPyoq_9GP-9I"


@pytest.fixture(autouse=True)
def no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


def test_a_token_sealed_by_an_earlier_release_still_opens() -> None:
    assert SecretBox(GOLDEN_KEY).open(GOLDEN_TOKEN, aad="camera:door") == "hunter2"


@pytest.mark.parametrize("prefix", ["v0", "v2", "", "V1"])
def test_a_token_of_another_format_is_refused(prefix: str) -> None:
    token = prefix + GOLDEN_TOKEN[2:]
    with pytest.raises(ConfigError, match="unknown format"):
        SecretBox(GOLDEN_KEY).open(token, aad="camera:door")


@pytest.mark.parametrize("change", [lambda t: t + ".x", lambda t: t + "A", lambda t: t[:-1],
                                    lambda t: t[:-2], lambda t: t[:-4]],
                         ids=["dot-suffix", "extra-char", "cut-1", "cut-2", "cut-4"])
def test_an_altered_token_is_one_clear_error(change) -> None:
    with pytest.raises(ConfigError, match="failed authentication"):
        SecretBox(GOLDEN_KEY).open(change(GOLDEN_TOKEN), aad="camera:door")


@pytest.mark.parametrize("size", [16, 31, 33, 48])
def test_a_key_that_is_not_32_bytes_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               size: int) -> None:
    monkeypatch.setenv(KEY_ENV, _b64e(os.urandom(size)))
    with pytest.raises(ConfigError, match="32 bytes"):
        load_key(tmp_path)


@pytest.mark.parametrize("mode", [0o601, 0o602, 0o604, 0o610, 0o620, 0o640])
def test_a_key_file_any_other_user_could_touch_is_refused(tmp_path: Path, mode: int) -> None:
    load_key(tmp_path)
    os.chmod(tmp_path / "secret.key", mode)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_key(tmp_path)


def test_a_stale_temp_key_from_a_crashed_process_is_not_reused(tmp_path: Path) -> None:
    """A crashed process left longer temp files (the old per-pid name, and one that looks
    like the toolkit's): the new key must not keep their tail. Temp names are unique, so a
    new key is never written into a leftover."""
    stale = [tmp_path / f"secret.key.{os.getpid()}.tmp", tmp_path / ".secret.key.stale.tmp"]
    for path in stale:
        path.write_text("x" * 200 + "\n")
    key = load_key(tmp_path)
    assert len(key) == 32 and load_key(tmp_path) == key
    assert all(path.read_text() == "x" * 200 + "\n" for path in stale)


def test_rotating_a_project_without_a_key_leaves_one_working_key(tmp_path: Path) -> None:
    rotation = rotate_key(tmp_path, lambda current, new: 0)
    assert rotation.resealed == 0 and not rotation.resumed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.key"]
    assert SecretBox(load_key(tmp_path, create=False)).key_id == rotation.new_key_id
