"""Encryption at rest for camera passwords (and any other small secret the registry keeps).

One 256-bit AES-GCM key per project: ``FLEET_SECRET_KEY`` (URL-safe base64 of 32
bytes) when set, else ``.fleet/secret.key`` (created on first use, mode 0600; a
key file readable by others is refused). Each secret is sealed with a fresh
96-bit nonce and bound to what it belongs to (``aad``, e.g. ``camera:<name>``),
so a ciphertext copied onto another row does not decrypt. The sealed text
names the key it was made with, so a wrong key is reported as such.

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
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fleet.errors import ConfigError

KEY_ENV = "FLEET_SECRET_KEY"
KEY_FILE = "secret.key"
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


class SecretBox:
    """Seals and opens small secrets with AES-256-GCM."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"edgefleet-secret-key" + key).hexdigest()[:12]

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
        if key_id != self.key_id:
            raise ConfigError(
                f"stored secret was encrypted with another key (key id {key_id})",
                where=aad,
                fix=f"restore the original .fleet/{KEY_FILE} or {KEY_ENV}",
            )
        raw = _b64d(body)
        try:
            return self._aead.decrypt(raw[:12], raw[12:], aad.encode("utf-8")).decode("utf-8")
        except InvalidTag as exc:
            raise ConfigError(
                "stored secret failed authentication",
                where=aad,
                fix="the registry row was altered; re-import the camera",
            ) from exc


def _create_key_file(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(generate_key() + "\n")
        fh.flush()
        os.fsync(fh.fileno())


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
    """The SecretBox for a project's state directory."""
    return SecretBox(load_key(state_dir, create=create))


def mask(value: str | None) -> str:
    """What a person sees instead of a secret: ``***`` when set, empty when not."""
    return MASK if value else ""
