"""Bulk camera registration from CSV: parse, validate every row, then apply all or nothing.

Columns: ``name,device,rtsp_url,username,password,description,tags`` (name, device
and rtsp_url required; the rest optional, in any order). UTF-8 with or without
BOM, CRLF or LF, quoted fields, empty lines ignored. ``password`` may be
``password_env:VAR`` or ``password_file:PATH`` (relative to the CSV file).
Credentials embedded in the URL are moved out of it. Tags are ``key=value``
separated by ``;`` (``app=NAME`` binds the camera to an application and counts
against the per-app limit). Nothing is written unless every row is valid.

>>> result = import_cameras(registry, Path("cameras.csv"), Limits())   # doctest: +SKIP
>>> result.ok, result.created
(True, 240)

Error messages never contain a password: they name the row (the file's line
number) and the column, and describe the problem without echoing secrets.
"""

from __future__ import annotations

import csv
import io
import os
import re
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from fleet_runtime.rtsp import PASSWORD_PLACEHOLDER

from fleet.errors import ConfigError
from fleet.registry import Camera, Store
from fleet.registry.sqlite import valid_name

COLUMNS = ("name", "device", "rtsp_url", "username", "password", "description", "tags")
REQUIRED = ("name", "device", "rtsp_url")
ON_CONFLICT = ("fail", "skip", "update")
MAX_URL, MAX_TEXT, MAX_PASSWORD, MAX_FILE_BYTES = 2048, 255, 1024, 64 * 1024 * 1024
_TAG_KEY = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A password given as a URL parameter, in the query or in a `/user=a&password=b&...` path.
_PARAM_PASSWORD = re.compile(r"(?<=[/?&;])(password|passwd|pwd|pass)=([^&;/?#]*)", re.I)


@dataclass(frozen=True)
class Limits:
    """Camera limits (fleet.yaml ``cameras:``); Panorama allowed 8 streams per application."""

    max_per_app: int = 8
    max_per_device: int = 80

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Limits:
        return cls(
            int(config.get("max_per_app", cls.max_per_app)),
            int(config.get("max_per_device", cls.max_per_device)),
        )


@dataclass(frozen=True)
class RowError:
    row: int
    column: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "message": self.message}


@dataclass
class ImportResult:
    file: str
    rows: int = 0
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    dry_run: bool = False
    applied: bool = False
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "file": self.file,
            "rows": self.rows,
            "dry_run": self.dry_run,
            "applied": self.applied,
            "created": len(self.created),
            "updated": len(self.updated),
            "skipped": len(self.skipped),
            "skipped_names": self.skipped,
            "errors": [e.as_dict() for e in self.errors],
            "elapsed_s": round(self.elapsed_s, 4),
        }


class _RowInvalid(Exception):
    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column, self.message = column, message


# ---- reading the file ------------------------------------------------------------------------


def decode(data: bytes) -> tuple[str, RowError | None]:
    """UTF-8 text without BOM, or an error naming the line where decoding failed."""
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return "", RowError(line, "", "the file is not UTF-8 text (save it as CSV UTF-8)")


def records(text: str) -> tuple[list[tuple[int, list[str]]], RowError | None]:
    """Every non-empty record with the line it starts on; quoted newlines stay inside fields."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    out, previous = [], 0
    try:
        for fields in reader:
            start, previous = previous + 1, reader.line_num
            if any(f.strip() for f in fields):
                out.append((start, fields))
    except csv.Error as exc:
        return out, RowError(previous + 1, "", f"malformed CSV: {exc}")
    return out, None


def header_errors(header: list[str]) -> list[RowError]:
    seen: Counter[str] = Counter(h.strip().lower() for h in header)
    errors = [
        RowError(1, col, f"unknown column '{col}' (expected {', '.join(COLUMNS)})")
        for col in seen
        if col not in COLUMNS
    ]
    errors += [
        RowError(1, col, f"column '{col}' appears {n} times")
        for col, n in seen.items()
        if n > 1 and col in COLUMNS
    ]
    errors += [
        RowError(1, col, f"required column '{col}' is missing")
        for col in REQUIRED
        if col not in seen
    ]
    return errors


# ---- one row -------------------------------------------------------------------------------


def _text(
    row: Mapping[str, str], column: str, limit: int = MAX_TEXT, multiline: bool = False
) -> str:
    value = row.get(column, "").strip()
    if multiline:  # a spreadsheet cell with line breaks: keep them, as LF
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    if len(value) > limit:
        raise _RowInvalid(column, f"longer than {limit} characters")
    if _CONTROL.search(value.replace("\n", "").replace("\t", "") if multiline else value):
        raise _RowInvalid(column, "contains control characters")
    return value


def _netloc(host: str, port: int | None) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}" if port else host


def check_url(raw: str) -> tuple[str, str, str]:
    """``(url without credentials, username, password)`` or _RowInvalid for rtsp_url."""
    col = "rtsp_url"
    if not raw:
        raise _RowInvalid(col, "is empty")
    if len(raw) > MAX_URL or _CONTROL.search(raw) or " " in raw:
        raise _RowInvalid(col, f"must be one line without spaces, at most {MAX_URL} characters")
    parts = urlsplit(raw)
    if parts.scheme.lower() not in ("rtsp", "rtsps"):
        raise _RowInvalid(col, f"scheme must be rtsp or rtsps, not '{parts.scheme[:16]}'")
    host = parts.hostname
    if not host:
        raise _RowInvalid(col, "has no host")
    try:
        port = parts.port
    except ValueError:
        raise _RowInvalid(col, "port must be a number from 1 to 65535") from None
    if port == 0:
        raise _RowInvalid(col, "port must be a number from 1 to 65535")
    if parts.path in ("", "/"):
        raise _RowInvalid(col, "has no stream path (e.g. rtsp://host:554/stream1)")
    if parts.fragment:
        raise _RowInvalid(col, "must not have a #fragment")
    clean = urlunsplit((parts.scheme.lower(), _netloc(host, port), parts.path, parts.query, ""))
    if "@" not in parts.netloc:
        return clean, "", ""
    return clean, unquote(parts.username or ""), unquote(parts.password or "")


def lift_password(url: str) -> tuple[str, str]:
    """``(url with the placeholder, password)`` for a password carried as a URL parameter, so
    the stored URL never holds it; the device fills it back in (rtsp.fill_password)."""
    found: set[str] = set()

    def take(match: re.Match[str]) -> str:
        value = unquote(match.group(2))
        if not value or match.group(2) == PASSWORD_PLACEHOLDER:
            return match.group(0)
        found.add(value)
        return f"{match.group(1)}={PASSWORD_PLACEHOLDER}"

    lifted = _PARAM_PASSWORD.sub(take, url)
    if len(found) > 1:
        raise _RowInvalid("rtsp_url", "carries two different passwords as parameters; keep one")
    return lifted, found.pop() if found else ""


def resolve_password(value: str, base_dir: Path, env: Mapping[str, str]) -> str:
    """The literal password, or the one named by ``password_env:VAR`` / ``password_file:PATH``."""
    col = "password"
    if value.startswith("password_env:"):
        var = value.partition(":")[2].strip()
        if not var or var not in env:
            raise _RowInvalid(col, f"environment variable '{var}' is not set")
        value = env[var]
    elif value.startswith("password_file:"):
        path = base_dir / value.partition(":")[2].strip()
        try:
            if path.stat().st_size > 4096:
                raise _RowInvalid(col, f"password file {path} is larger than 4 KiB")
            value = path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError):
            raise _RowInvalid(col, f"password file {path} cannot be read as UTF-8 text") from None
    if len(value) > MAX_PASSWORD or "\x00" in value or "\n" in value or "\r" in value:
        raise _RowInvalid(col, f"must be one line of at most {MAX_PASSWORD} characters")
    return value


def parse_tags(value: str) -> dict[str, str]:
    """``app=people;floor=2`` (``;`` or spaces between tags) -> dict."""
    tags: dict[str, str] = {}
    for item in re.split(r"[;\s]+", value.strip()):
        if not item:
            continue
        key, _, val = item.partition("=")
        if not _TAG_KEY.match(key) or len(val) > 256:
            raise _RowInvalid(
                "tags", f"tag '{item[:40]}' is not key=value with a key of A-Z a-z 0-9 _ . : / -"
            )
        tags[key] = val
    if "app" in tags and not valid_name(tags["app"]):
        raise _RowInvalid("tags", "app tag must be 1-255 characters from A-Z a-z 0-9 _ -")
    return tags


def _credentials(
    row: Mapping[str, str], url_user: str, url_pass: str, base_dir: Path, env: Mapping[str, str]
) -> tuple[str, str]:
    user = _text(row, "username")
    raw_password = row.get("password", "")
    if url_user or url_pass:
        if user or raw_password:
            raise _RowInvalid(
                "rtsp_url",
                "credentials are in the URL and in the username/password columns; keep one",
            )
        user, raw_password = url_user, url_pass
        if len(user) > MAX_TEXT or _CONTROL.search(user):
            raise _RowInvalid("rtsp_url", "the username in the URL is not valid")
    password = resolve_password(raw_password, base_dir, env) if raw_password else ""
    if password and not user:
        raise _RowInvalid("username", "is empty but a password is given")
    return user, password


def _param_credentials(
    row: Mapping[str, str],
    url_user: str,
    url_pass: str,
    param_pass: str,
    base_dir: Path,
    env: Mapping[str, str],
) -> tuple[str, str]:
    """The camera's username and its password taken from a URL parameter; a password given
    elsewhere too (user:password@, the password column) must be the same one."""
    if len(param_pass) > MAX_PASSWORD or "\x00" in param_pass:
        raise _RowInvalid("rtsp_url", f"the password in the URL is longer than {MAX_PASSWORD}")
    if url_pass and url_pass != param_pass:
        raise _RowInvalid("rtsp_url", "carries two different passwords; keep one")
    raw = row.get("password", "")
    if raw and resolve_password(raw, base_dir, env) != param_pass:
        raise _RowInvalid("password", "differs from the password inside rtsp_url; keep one")
    user = _text(row, "username")
    if url_user and user and url_user != user:
        raise _RowInvalid("username", "differs from the username inside rtsp_url; keep one")
    return user or url_user, param_pass


def camera_of(row: Mapping[str, str], base_dir: Path, env: Mapping[str, str]) -> Camera:
    """One validated Camera from a CSV row (registry checks come later)."""
    name = _text(row, "name")
    if not valid_name(name):
        raise _RowInvalid("name", "must be 1-255 characters from A-Z a-z 0-9 _ -")
    device = _text(row, "device")
    if not device:
        raise _RowInvalid("device", "is empty")
    url, url_user, url_pass = check_url(row.get("rtsp_url", "").strip())
    url, param_pass = lift_password(url)
    if param_pass:
        user, password = _param_credentials(row, url_user, url_pass, param_pass, base_dir, env)
    else:
        user, password = _credentials(row, url_user, url_pass, base_dir, env)
    return Camera(
        name=name,
        device=device,
        rtsp_url=url,
        username=user,
        password=password,
        description=_text(row, "description", multiline=True),
        tags=parse_tags(row.get("tags", "")),
    )


# ---- the whole file ----------------------------------------------------------------------------


@dataclass
class _Plan:
    creates: list[Camera] = field(default_factory=list)
    updates: list[Camera] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


class _Validator:
    """Registry-aware checks: unique names, known devices, conflicts and limits."""

    def __init__(self, registry: Store, limits: Limits, on_conflict: str) -> None:
        self.limits, self.on_conflict = limits, on_conflict
        self.devices = {d["name"] for d in registry.list_devices()}
        self.existing = registry.camera_devices()
        self.counts = Counter(registry.camera_counts())
        self.per_device: Counter[str] = Counter()
        for (device, _app), n in self.counts.items():
            self.per_device[device] += n
        self.seen: dict[str, int] = {}
        self.plan = _Plan()

    def add(self, line: int, cam: Camera) -> None:
        if cam.name in self.seen:
            raise _RowInvalid("name", f"'{cam.name}' is already used on row {self.seen[cam.name]}")
        self.seen[cam.name] = line
        if cam.device not in self.devices:
            raise _RowInvalid("device", f"device '{cam.device}' is not registered")
        if cam.name in self.existing:
            self._conflict(cam)
            return
        self._count(cam)
        self.plan.creates.append(cam)

    def _conflict(self, cam: Camera) -> None:
        if self.on_conflict == "fail":
            raise _RowInvalid(
                "name",
                f"camera '{cam.name}' is already registered (use --on-conflict skip or update)",
            )
        if self.on_conflict == "skip":
            self.plan.skipped.append(cam.name)
            return
        old_device, old_app = self.existing[cam.name]
        self.counts[(old_device, old_app)] -= 1
        self.per_device[old_device] -= 1
        self._count(cam)
        self.plan.updates.append(cam)

    def _count(self, cam: Camera) -> None:
        app = cam.tags.get("app", "")
        self.counts[(cam.device, app)] += 1
        self.per_device[cam.device] += 1
        if self.per_device[cam.device] > self.limits.max_per_device:
            raise _RowInvalid(
                "device",
                f"device '{cam.device}' would have "
                f"{self.per_device[cam.device]} cameras (limit "
                f"{self.limits.max_per_device}, cameras.max_per_device)",
            )
        if app and self.counts[(cam.device, app)] > self.limits.max_per_app:
            raise _RowInvalid(
                "tags",
                f"app '{app}' on '{cam.device}' would have "
                f"{self.counts[(cam.device, app)]} cameras "
                f"(limit {self.limits.max_per_app}, cameras.max_per_app)",
            )


def plan_import(
    registry: Store,
    data: bytes,
    base_dir: Path,
    limits: Limits,
    on_conflict: str = "fail",
    env: Mapping[str, str] | None = None,
) -> _Plan:
    """Validate every row of a CSV file against the registry; change nothing."""
    if on_conflict not in ON_CONFLICT:
        raise ConfigError(f"--on-conflict must be one of {', '.join(ON_CONFLICT)}")
    validator = _Validator(registry, limits, on_conflict)
    text, error = decode(data)
    rows: list[tuple[int, list[str]]] = []
    if error is None:
        rows, error = records(text)
    if error:
        validator.plan.errors.append(error)
    elif not rows:
        validator.plan.errors.append(RowError(1, "", "the file has no header row"))
    if rows:
        _validate_rows(validator, rows, base_dir, os.environ if env is None else env)
    return validator.plan


def _validate_rows(
    validator: _Validator, rows: list[tuple[int, list[str]]], base_dir: Path, env: Mapping[str, str]
) -> None:
    header = [h.strip().lower() for h in rows[0][1]]
    errors = header_errors(rows[0][1])
    validator.plan.errors.extend(errors)
    if errors:
        return
    for line, fields in rows[1:]:
        if len(fields) != len(header):
            validator.plan.errors.append(
                RowError(line, "", f"has {len(fields)} fields, the header has {len(header)}")
            )
            continue
        try:
            validator.add(line, camera_of(dict(zip(header, fields, strict=True)), base_dir, env))
        except _RowInvalid as exc:
            validator.plan.errors.append(RowError(line, exc.column, exc.message))


def import_cameras(
    registry: Store,
    path: Path,
    limits: Limits,
    *,
    on_conflict: str = "fail",
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
) -> ImportResult:
    """Validate the whole file, then write every row in one transaction (or none)."""
    started = time.perf_counter()
    result = ImportResult(file=str(path), dry_run=dry_run)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError(
                f"{path} is larger than {MAX_FILE_BYTES >> 20} MiB", fix="split the file"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", fix="check the path") from exc
    plan = plan_import(registry, data, path.parent, limits, on_conflict, env)
    result.rows = (
        len(plan.creates)
        + len(plan.updates)
        + len(plan.skipped)
        + len({e.row for e in plan.errors if e.row > 1})
    )
    result.errors = plan.errors
    if not result.ok:  # nothing will change: report no creates, updates or skips
        result.elapsed_s = time.perf_counter() - started
        return result
    result.skipped = plan.skipped
    result.created = [c.name for c in plan.creates]
    result.updated = [c.name for c in plan.updates]
    if not dry_run and (plan.creates or plan.updates):
        registry.write_cameras(plan.creates, plan.updates)
        result.applied = True
    result.elapsed_s = time.perf_counter() - started
    return result


def sample_csv(
    devices: list[Mapping[str, Any]],
    per_device: int = 2,
    *,
    host: str = "127.0.0.1",
    port: int = 8554,
    password_env: str = "LAB_CAMERA_PASSWORD",  # noqa: S107 (a variable name)
) -> str:
    """A cameras.csv for the given devices (the lab demo's sample): each device's first
    camera takes its password from an environment variable, the others need none."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for dev in devices:
        for i in range(1, per_device + 1):
            name, site = f"{dev['name']}-cam{i}", dev.get("site", "")
            user, password = ("viewer", f"password_env:{password_env}") if i == 1 else ("", "")
            writer.writerow(
                [
                    name,
                    dev["name"],
                    f"rtsp://{host}:{port}/{dev['name']}/cam{i}",
                    user,
                    password,
                    f"Lab camera {i} at {site}, {dev['name']}",
                    f"app=people-counter;site={site}",
                ]
            )
    return out.getvalue()
