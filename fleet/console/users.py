"""Console users: ``.fleet/console/users.json`` (0600), one record per user.

Each record holds the role (`viewer` or `operator`), an scrypt hash of the
password and a SHA-256 of the user's API token. Neither the password nor the
token is stored; the token is shown once, when it is made. The file lives in
the project's state directory, beside the registry and the journals, not in
``fleet.yaml``: that file is usually committed, hashes and token digests are not.

>>> token = add_user(project, "ana", "operator", "long enough passphrase")  # doctest: +SKIP
>>> check_password(project, "ana", "long enough passphrase").role             # doctest: +SKIP
'operator'
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet_runtime.layout import StateFileError, atomic_write_json, read_json

from fleet.errors import ConfigError, UsageError
from fleet.project import Project

ROLES = ("viewer", "operator")
MIN_PASSWORD = 10
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
# scrypt cost: n=2**14, r=8 takes ~50 ms and 16 MiB here: slow for a guesser, fine for a login.
_N, _R, _P = 2**14, 8, 1


@dataclass(frozen=True)
class User:
    name: str
    role: str
    # which password the record held when read: a session signed in with an older one
    # (the user was added again) no longer matches `find` and is signed out
    stamp: str = field(default="", repr=False)

    @property
    def can_act(self) -> bool:
        return self.role == "operator"


def users_path(project: Project) -> Path:
    folder = project.state_dir / "console"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder / "users.json"


def _load(project: Project) -> dict[str, dict[str, Any]]:
    path = users_path(project)
    _check_mode(path)
    try:
        doc = read_json(path, default={"users": {}})
    except StateFileError:
        doc = None
    users = doc.get("users") if isinstance(doc, dict) else None
    if not isinstance(users, dict) or not all(isinstance(u, dict) for u in users.values()):
        raise ConfigError("not a console users file", where=str(path),
                          fix="remove it and add the users again with `fleet serve user add`")
    return users


def _check_mode(path: Path) -> None:
    """Password hashes are secrets at rest: a users file others can read is refused."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        return
    if mode & 0o077:
        raise ConfigError(f"the console users file is readable by others (mode {mode:04o})",
                          where=str(path), fix=f"chmod 600 {path}")


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=64 * 2**20)
    parts = (base64.b64encode(salt).decode(), base64.b64encode(digest).decode())
    return f"scrypt${_N}${_R}${_P}${parts[0]}${parts[1]}"


def _matches(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                             p=int(p), maxmem=64 * 2**20)
    except ValueError:
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise UsageError(f"user name {name!r} is not allowed",
                         fix="use 1-64 letters, digits, '.', '_' or '-'")


def add_user(project: Project, name: str, role: str, password: str) -> str:
    """Create or replace `name`; returns a new API token (shown once, stored only hashed)."""
    check_name(name)
    if role not in ROLES:
        raise UsageError(f"unknown role '{role}'", fix=f"use one of: {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"the password is shorter than {MIN_PASSWORD} characters",
                         fix="choose a longer one (a few words make a good one)")
    users = _load(project)
    token = "fct_" + secrets.token_urlsafe(32)
    users[name] = {"role": role, "password": hash_password(password),
                   "token_sha256": _token_digest(token)}
    atomic_write_json(users_path(project), {"users": users}, mode=0o600)
    return token


def remove_user(project: Project, name: str) -> None:
    users = _load(project)
    if users.pop(name, None) is None:
        raise UsageError(f"no console user '{name}'", fix="see `fleet serve user list`")
    atomic_write_json(users_path(project), {"users": users}, mode=0o600)


def list_users(project: Project) -> list[User]:
    return [User(n, str(u.get("role"))) for n, u in sorted(_load(project).items())]


# A hash to compare against when the user does not exist, so a wrong name costs
# as long as a wrong password and timing does not tell which names exist.
_DUMMY = hash_password("not a real password", salt=b"0" * 16)


def check_password(project: Project, name: str, password: str) -> User | None:
    record = _load(project).get(name)
    stored = str(record.get("password", "")) if record else _DUMMY
    if _matches(password, stored) and record is not None:
        return _user(name, record)
    return None


def find(project: Project, name: str) -> User | None:
    """The user as the users file says now (None once removed)."""
    record = _load(project).get(name)
    return _user(name, record) if record is not None else None


def _user(name: str, record: dict[str, Any]) -> User:
    # the hash's tail is enough to tell passwords apart, and is no help to a guesser
    return User(name, str(record.get("role")), str(record.get("password", ""))[-12:])


def user_for_token(project: Project, token: str) -> User | None:
    digest = _token_digest(token)
    for name, record in _load(project).items():
        if hmac.compare_digest(str(record.get("token_sha256", "")), digest):
            return _user(name, record)
    return None
