"""Encryption at rest for camera passwords (and any other small secret the registry keeps).

One 256-bit AES-GCM key per project: ``FLEET_SECRET_KEY`` (URL-safe base64 of 32
bytes) when set, else ``.fleet/secret.key`` (created on first use, mode 0600; a
key file readable by others is refused). Each secret is sealed with a fresh
96-bit nonce and bound to what it belongs to (``aad``, e.g. ``camera:<name>``),
so a ciphertext copied onto another row does not decrypt. The sealed text
names the key it was made with, so a wrong key is reported as such.

`rotate_key` replaces the key file and re-seals every secret with the new one.
It crashes safely: the new key is written to ``secret.key.new`` first, and a box
opens with either key while that file exists. Running it again finishes an
interrupted rotation with the same new key.

>>> box = SecretBox(os.urandom(32))
>>> sealed = box.seal("hunter2", aad="camera:door")
>>> box.open(sealed, aad="camera:door")
'hunter2'
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fleet_runtime import durable
from fleet_runtime.durable import atomic_write_text

from fleet.errors import ConfigError

KEY_ENV = "FLEET_SECRET_KEY"
KEY_FILE = "secret.key"
PENDING_KEY_FILE = "secret.key.new"  # a rotation in progress: the key it is moving to
MASK = "***"
_PREFIX = "v1"


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def generate_key() -> str:
    """A new key in the text form FLEET_SECRET_KEY and secret.key use."""
    return _b64e(os.urandom(32))


def parse_key(text: str, where: str) -> bytes:
    """Decode a key's text form, refusing anything that is not exactly 32 bytes."""
    try:
        key = _b64d(text.strip())
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigError(
            "secret key is not 32 bytes of URL-safe base64",
            where=where,
            fix="generate one: python -c 'import fleet.secrets as s; print(s.generate_key())'",
        )
    return key


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"edgefleet-secret-key" + key).hexdigest()[:12]


class SecretBox:
    """Seals with one AES-256-GCM key; opens with it or with keys from ``also`` (the other
    side of an interrupted rotation)."""

    def __init__(self, key: bytes, *, also: tuple[bytes, ...] = ()) -> None:
        self._aead = AESGCM(key)
        self.key_id = key_id(key)
        self._openers = {key_id(k): AESGCM(k) for k in also}
        self._openers[self.key_id] = self._aead

    def seal(self, plaintext: str, *, aad: str) -> str:
        """Encrypt `plaintext`; the result is ASCII (``v1.<key id>.<nonce+ciphertext>``)."""
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), aad.encode("utf-8"))
        return f"{_PREFIX}.{self.key_id}.{_b64e(nonce + sealed)}"

    def open(self, token: str, *, aad: str) -> str:
        """Decrypt a value made by `seal` with the same key and `aad`."""
        prefix, key_id, body = (token.split(".", 2) + ["", ""])[:3]
        if prefix != _PREFIX:
            raise ConfigError(
                "stored secret has an unknown format",
                where=aad,
                fix="re-import the camera with its password",
            )
        aead = self._openers.get(key_id)
        if aead is None:
            raise ConfigError(
                f"stored secret was encrypted with another key (key id {key_id})",
                where=aad,
                fix=f"restore the original .fleet/{KEY_FILE} or {KEY_ENV}",
            )
        try:
            raw = _b64d(body)
            return aead.decrypt(raw[:12], raw[12:], aad.encode("utf-8")).decode("utf-8")
        except (InvalidTag, binascii.Error, ValueError) as exc:  # an altered row: cut or padded
            raise ConfigError(
                "stored secret failed authentication",
                where=aad,
                fix="the registry row was altered; re-import the camera",
            ) from exc


def _create_key_file(path: Path) -> None:
    """A new key at `path`, whole or not at all (a crash leaves no empty key file behind);
    FileExistsError when another process made one first."""
    # Linked into place, not renamed: the name appears with the whole key, exclusively.
    atomic_write_text(path, generate_key() + "\n", 0o600, exclusive=True)


def _read_key_file(path: Path) -> bytes:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"secret key file is readable by others (mode {mode:o})",
            where=str(path),
            fix=f"run `chmod 600 {path}`",
        )
    return parse_key(path.read_text(encoding="ascii"), str(path))


def load_key(state_dir: Path, *, create: bool = True) -> bytes:
    """The project's key: FLEET_SECRET_KEY, else ``state_dir/secret.key`` (made if missing)."""
    env = os.environ.get(KEY_ENV)
    if env:
        return parse_key(env, KEY_ENV)
    path = state_dir / KEY_FILE
    if not path.exists():
        if not create:
            raise ConfigError(
                "no secret key", where=str(path), fix=f"set {KEY_ENV} or restore .fleet/{KEY_FILE}"
            )
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            _create_key_file(path)
    return _read_key_file(path)


def secret_box(state_dir: Path, *, create: bool = True) -> SecretBox:
    """The SecretBox for a project's state directory (opening with the pending key too
    while a rotation is unfinished)."""
    pending = state_dir / PENDING_KEY_FILE
    also = (_read_key_file(pending),) if pending.exists() and not os.environ.get(KEY_ENV) else ()
    return SecretBox(load_key(state_dir, create=create), also=also)


def ensure_rotatable() -> None:
    """Refuse before anything changes when the key is not ours to replace."""
    if os.environ.get(KEY_ENV):
        raise ConfigError(
            f"the secret key comes from {KEY_ENV}; only the key file can be rotated here",
            where=KEY_ENV,
            fix=f"unset {KEY_ENV} to rotate .fleet/{KEY_FILE}",
        )


@dataclass(frozen=True)
class Rotation:
    old_key_id: str
    new_key_id: str
    resealed: int
    resumed: bool  # an interrupted rotation was finished


def rotate_key(state_dir: Path, reseal: Callable[[SecretBox, SecretBox], int]) -> Rotation:
    """Move the project to a new key file; ``reseal(current, new)`` re-seals every secret
    with ``new`` in one transaction and returns how many. Order, for crash safety: the new
    key is made durable, secrets are re-sealed, then the new key replaces the old file."""
    ensure_rotatable()
    current_path, pending = state_dir / KEY_FILE, state_dir / PENDING_KEY_FILE
    old = load_key(state_dir, create=True)
    resumed = pending.exists()
    if not resumed:
        _create_key_file(pending)
    new = _read_key_file(pending)
    count = reseal(SecretBox(old, also=(new,)), SecretBox(new))
    durable.replace(pending, current_path)
    return Rotation(key_id(old), key_id(new), count, resumed)


def mask(value: str | None) -> str:
    """What a person sees instead of a secret: ``***`` when set, empty when not."""
    return MASK if value else ""
