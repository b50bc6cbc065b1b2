"""Encryption at rest for camera passwords: key handling and sealing."""

from __future__ import annotations

import json
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


def registry_with_passwords(project_dir: Path) -> dict[str, str]:
    """A registry with three cameras, two of them with passwords; returns name -> password."""
    from fleet.cameras import Limits, import_cameras
    from fleet.project import Project
    from fleet.registry import open_registry

    passwords = {"gate": "p@ss:word", "lot": "s3cret-lot"}
    csv = project_dir / "cameras.csv"
    csv.write_text(
        "name,device,rtsp_url,username,password\n"
        + "".join(f"{n},dev-1,rtsp://10.0.0.{i}/s,admin,{p}\n"
                  for i, (n, p) in enumerate(passwords.items()))
        + "yard,dev-1,rtsp://10.0.0.9/s,,\n"
    )
    registry = open_registry(Project.locate(project_dir))
    with registry.transaction():
        registry._upsert("dev-1", {"site": "berlin"})
    import_cameras(registry, csv, Limits(), env={})
    registry.close()
    return passwords


def stored_refs(project_dir: Path) -> dict[str, str]:
    import sqlite3

    with sqlite3.connect(project_dir / ".fleet/registry.db") as conn:
        return dict(conn.execute("SELECT name, password_ref FROM cameras WHERE password_ref IS NOT NULL"))


def passwords_now(project_dir: Path) -> dict[str, str]:
    from fleet.project import Project
    from fleet.registry import open_registry

    registry = open_registry(Project.locate(project_dir))
    try:
        return {n: registry.camera_password(n) for n in stored_refs(project_dir)}
    finally:
        registry.close()


def test_rotate_reseals_every_password_under_a_new_key(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labkit import run_cli

    monkeypatch.delenv(KEY_ENV, raising=False)
    passwords = registry_with_passwords(project_dir)
    key_file = project_dir / ".fleet/secret.key"
    old_key, old_refs = key_file.read_bytes(), stored_refs(project_dir)

    plan = run_cli(project_dir, "secrets", "rotate", "--dry-run", "--json")
    assert plan.exit_code == 0 and json.loads(plan.stdout)["would_reseal"] == 2
    assert key_file.read_bytes() == old_key and stored_refs(project_dir) == old_refs

    done = run_cli(project_dir, "secrets", "rotate", "--json")
    report = json.loads(done.stdout)
    assert done.exit_code == 0 and report["resealed"] == 2 and not report["resumed"]
    assert report["old_key_id"] != report["new_key_id"]
    assert key_file.read_bytes() != old_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not (project_dir / ".fleet/secret.key.new").exists()
    refs = stored_refs(project_dir)
    assert all(ref.split(".")[1] == report["new_key_id"] for ref in refs.values())
    assert passwords_now(project_dir) == passwords
    for secret in [*passwords.values(), key_file.read_text().strip(), old_key.decode().strip()]:
        assert secret not in done.stdout + done.stderr + plan.stdout + plan.stderr


@pytest.mark.parametrize("crash_at", ["reseal", "replace"])
def test_interrupted_rotation_loses_nothing_and_finishes_on_rerun(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch, crash_at: str
) -> None:
    """Killed before the transaction commits, or after it but before the key file is
    replaced: every password still opens, and a second run finishes with the same key."""
    import fleet.secrets as secrets_module
    from fleet.project import Project
    from fleet.registry import open_registry

    monkeypatch.delenv(KEY_ENV, raising=False)
    passwords = registry_with_passwords(project_dir)

    class Crash(Exception):
        pass

    registry = open_registry(Project.locate(project_dir))
    if crash_at == "reseal":
        real_seal = SecretBox.seal
        calls = iter(range(10))

        def seal(self: SecretBox, plaintext: str, *, aad: str) -> str:
            if next(calls) == 1:  # the second camera: the first one's UPDATE rolls back
                raise Crash()
            return real_seal(self, plaintext, aad=aad)

        monkeypatch.setattr(SecretBox, "seal", seal)
    else:
        def replace(src: object, dst: object) -> None:
            raise Crash()

        monkeypatch.setattr(secrets_module.os, "replace", replace)
    with pytest.raises(Crash):
        registry.rotate_secret_key()
    registry.close()
    monkeypatch.undo()
    pending = project_dir / ".fleet/secret.key.new"
    assert pending.exists()
    assert passwords_now(project_dir) == passwords  # readable in the in-between state

    registry = open_registry(Project.locate(project_dir))
    rotation = registry.rotate_secret_key()
    registry.close()
    assert rotation.resumed and rotation.resealed == 2
    assert rotation.new_key_id == secrets_module.key_id(
        secrets_module.parse_key((project_dir / ".fleet/secret.key").read_text(), "key")
    )
    assert not pending.exists()
    assert passwords_now(project_dir) == passwords


def test_rotate_refuses_an_environment_key_and_changes_nothing(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labkit import run_cli

    monkeypatch.setenv(KEY_ENV, generate_key())
    registry_with_passwords(project_dir)
    before = stored_refs(project_dir)
    for args in (("--dry-run",), ()):
        result = run_cli(project_dir, "secrets", "rotate", *args)
        assert result.exit_code == 2 and f"unset {KEY_ENV}" in result.stderr
    assert stored_refs(project_dir) == before
    assert not (project_dir / ".fleet/secret.key.new").exists()


def test_a_crash_while_making_the_new_key_leaves_no_partial_key(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fleet.secrets as secrets_module
    from fleet.project import Project
    from fleet.registry import open_registry

    monkeypatch.delenv(KEY_ENV, raising=False)
    passwords = registry_with_passwords(project_dir)

    def crash(src: object, dst: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(secrets_module.os, "link", crash)
    registry = open_registry(Project.locate(project_dir))
    with pytest.raises(OSError, match="power cut"):
        registry.rotate_secret_key()
    registry.close()
    monkeypatch.undo()
    assert sorted(p.name for p in (project_dir / ".fleet").glob("secret.key*")) == ["secret.key"]
    assert passwords_now(project_dir) == passwords


def test_rotate_refuses_a_damaged_pending_key_and_changes_nothing(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labkit import run_cli

    monkeypatch.delenv(KEY_ENV, raising=False)
    registry_with_passwords(project_dir)
    before = stored_refs(project_dir)
    pending = project_dir / ".fleet/secret.key.new"
    pending.write_text("not-a-key\n")
    pending.chmod(0o600)
    result = run_cli(project_dir, "secrets", "rotate")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: secret key is not 32 bytes of URL-safe base64"
    )
    assert "secret.key.new" in result.stderr and "Traceback" not in result.stderr
    assert stored_refs(project_dir) == before


def test_dry_run_on_a_project_without_a_key_makes_none(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labkit import run_cli

    monkeypatch.delenv(KEY_ENV, raising=False)
    result = run_cli(project_dir, "secrets", "rotate", "--dry-run", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"dry_run": True, "key_id": None, "would_reseal": 0}
    assert not list((project_dir / ".fleet").glob("secret.key*"))
