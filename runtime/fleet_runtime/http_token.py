"""The bearer token that guards the runtime's state-changing HTTP endpoints.

``fleet-runtime run --http`` keeps one token per device in
``FLEET_ROOT/var/lib/fleet/runtime.token`` (0600, made on first use). A
client that may pause or resume nodes (root on the device, or ``fleet-agent``)
reads that file and sends ``Authorization: Bearer <token>``; a web page in a
browser on the device cannot read it, so it cannot send signals.

>>> token = ensure_token(Path("/tmp/dev1/var/lib/fleet/runtime.token"))  # doctest: +SKIP
>>> read_token(Path("/tmp/dev1/var/lib/fleet/runtime.token")) == token  # doctest: +SKIP
True
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

TOKEN_BYTES = 32


def read_token(path: Path) -> str:
    """The token in `path`; OSError when missing or readable by others, ValueError when empty."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "r", encoding="ascii") as fh:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            raise PermissionError(f"{path} is readable by others (chmod 600 it)")
        token = fh.read(256).strip()
    if len(token) < 32:
        raise ValueError(f"{path} holds no token")
    return token


def ensure_token(path: Path) -> str:
    """The token in `path`, made (0600, written whole or not at all) when there is none."""
    try:
        return read_token(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, token.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another runtime made one meanwhile: use theirs
    except FileExistsError:
        return read_token(path)
    finally:
        os.unlink(tmp)
    return token
