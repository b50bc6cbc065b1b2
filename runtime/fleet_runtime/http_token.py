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

from fleet_runtime.durable import atomic_write_text

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
    token = secrets.token_urlsafe(TOKEN_BYTES)
    try:  # exclusive: fails if another runtime made one meanwhile, then use theirs
        atomic_write_text(path, token + "\n", 0o600, exclusive=True)
    except FileExistsError:
        return read_token(path)
    return token
