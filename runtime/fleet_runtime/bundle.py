"""The OTA bundle format, used by both halves (the controller builds, the device installs).

A bundle is an uncompressed tar stream whose members are, in this order:

1. ``manifest.json``: name, version, hardware, arch, min_version, key_id and
   ``files`` (path, size, SHA-256, mode of every payload file);
2. ``manifest.sig``: the 64-byte Ed25519 signature of the manifest bytes, by
   the release key ``key_id`` names;
3. ``payload/<path>`` for every file, regular files only.

Reading is streaming and fails closed: the signature is checked before any
payload byte is looked at, and every member is checked (name, type, size,
SHA-256) while it is written, so nothing unverified is ever accepted. Paths
with ``..``, absolute paths, links, device files, duplicates and members not
named by the manifest are refused.

>>> with open("x.bundle", "rb") as fh:              # doctest: +SKIP
...     manifest = read_bundle(fh, Keyring.from_dir(layout.release_keys), DirectorySink(dest))
>>> manifest.version                                # doctest: +SKIP
'1.1.0'
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Protocol, TypeVar, cast

from fleet_runtime import tarstream, versions

if TYPE_CHECKING:
    # Imported where used: `fleet-agent health` and `slots` load this module for its
    # constants, and a Jetson's small cores pay ~25 ms for cryptography's import (#19).
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

FORMAT = 1
MANIFEST, SIGNATURE, PAYLOAD = "manifest.json", "manifest.sig", "payload/"
# The limits a device enforces, and so the limits `fleet firmware build` checks
# (build_manifest runs the device's parse_manifest). A root filesystem holds a
# few hundred thousand files; each costs about 150 bytes of manifest plus its
# path, so 320 bytes a file leaves room for paths of ~160 characters on average.
MAX_FILES = 500_000
MAX_MANIFEST_BYTES = MAX_FILES * 320
SIGNATURE_BYTES = 64
MAX_BUNDLE_BYTES = 64 << 30
CHUNK = 1 << 20
RESERVED_PREFIX = ".fleet-bundle"  # where an installed slot keeps its manifest
FILE_MODES = (0o644, 0o755)
VERSION_PATTERN = versions.PATTERN
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z"
_NAME_RE = re.compile(NAME_PATTERN)

Progress = Callable[[int, int], None]


class BundleError(Exception):
    """A bundle that must not be installed: ``code`` is stable, ``message`` says what and where."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------------------- versions


def parse_version(text: str) -> versions.Key:
    """``"1.2.0-rc1"``'s sort key (see fleet_runtime.versions); not a version: BundleError."""
    try:
        return versions.key(text)
    except versions.VersionError as exc:
        raise BundleError("bad-version", str(exc)) from None


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as version `a` is older than, equal to or newer than `b`."""
    try:
        return versions.compare(a, b)
    except versions.VersionError as exc:
        raise BundleError("bad-version", str(exc)) from None


# ---------------------------------------------------------------------------- keys


def key_id(public_key: Ed25519PublicKey) -> str:
    """Stable short id of a release key: the first 16 hex digits of SHA-256 of its raw bytes."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(data: bytes, where: str = "key") -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise BundleError("bad-key", f"{where} is not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError("bad-key", f"{where} is not an Ed25519 key")
    return key


@dataclass
class Keyring:
    """The release public keys a device (or the controller) trusts, by key id."""

    keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)

    @classmethod
    def from_dir(cls, path: Path) -> Keyring:
        ring = cls()
        for pub in sorted(path.glob("*.pub")) if path.is_dir() else []:
            ring.add(load_public_key(pub.read_bytes(), str(pub)))
        return ring

    def add(self, key: Ed25519PublicKey) -> str:
        kid = key_id(key)
        self.keys[kid] = key
        return kid

    def verify(self, kid: str, signature: bytes, data: bytes) -> None:
        key = self.keys.get(kid)
        if key is None:
            raise BundleError(
                "untrusted-key",
                f"bundle is signed by key {kid!r}, which is not in this keyring "
                f"({', '.join(sorted(self.keys)) or 'empty'})",
            )
        from cryptography.exceptions import InvalidSignature

        try:
            key.verify(signature, data)
        except InvalidSignature as exc:
            raise BundleError(
                "bad-signature", f"manifest signature does not verify with key {kid}"
            ) from exc


# ---------------------------------------------------------------------------- manifest


def safe_path(name: str) -> str:
    """A payload path that stays inside its slot, or BundleError. ``"a/b"`` -> ``"a/b"``."""
    bad = (
        not isinstance(name, str) or not name or "\x00" in name or "\\" in name
        or name.startswith("/")
    )
    parts = [] if bad else name.split("/")
    if bad or any(p in ("", ".", "..") for p in parts) or parts[0] == RESERVED_PREFIX:
        raise BundleError("unsafe-path", f"refusing path {name!r}: absolute, '..' or reserved")
    return str(PurePosixPath(*parts))


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str
    mode: int = 0o644

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "mode": self.mode}


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    hardware: tuple[str, ...]
    arch: tuple[str, ...]
    key_id: str
    files: tuple[FileEntry, ...]
    min_version: str | None = None
    hooks: dict[str, str] = field(default_factory=dict)
    downgrade_permit: dict[str, Any] | None = None
    add_keys: dict[str, str] = field(default_factory=dict)
    description: str = ""
    raw: bytes = b""

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT, "name": self.name, "version": self.version,
            "hardware": list(self.hardware), "arch": list(self.arch), "key_id": self.key_id,
            "min_version": self.min_version, "files": [f.as_json() for f in self.files],
            "hooks": dict(self.hooks), "description": self.description,
        }
        if self.downgrade_permit:
            out["downgrade_permit"] = dict(self.downgrade_permit)
        if self.add_keys:
            out["add_keys"] = dict(self.add_keys)
        return out

    def encode(self) -> bytes:
        return (json.dumps(self.as_json(), indent=1, sort_keys=True) + "\n").encode()


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise BundleError("bad-manifest", f"manifest: {what}")


def _str_list(doc: dict[str, Any], key: str) -> tuple[str, ...]:
    value = doc.get(key)
    value = [value] if isinstance(value, str) else value
    if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
        raise BundleError("bad-manifest", f"manifest: '{key}' must be a non-empty list of strings")
    return tuple(value)


def _file_entry(item: Any) -> FileEntry:
    _require(isinstance(item, dict), "each of 'files' must be an object")
    size, digest, mode = item.get("size"), item.get("sha256"), item.get("mode", 0o644)
    _require(isinstance(size, int) and 0 <= size <= MAX_BUNDLE_BYTES, f"bad size for {item}")
    _require(isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest) is not None,
             f"bad sha256 for {item.get('path')!r}")
    _require(mode in FILE_MODES, f"mode of {item.get('path')!r} must be 0644 or 0755")
    return FileEntry(safe_path(item.get("path")), size, digest, mode)


def _check_file_count(count: int) -> None:
    if count > MAX_FILES:
        raise BundleError("oversize", f"manifest lists {count} files, more than the "
                          f"{MAX_FILES} a device accepts: split the image")


def _hooks(doc: dict[str, Any], paths: set[str]) -> dict[str, str]:
    hooks = doc.get("hooks") or {}
    _require(isinstance(hooks, dict), "'hooks' must be an object")
    for hook, path in hooks.items():
        _require(hook in HOOKS, f"unknown hook {hook!r} (known: {', '.join(HOOKS)})")
        _require(isinstance(path, str), f"hook {hook} must name one payload file")
        _require(path in paths, f"hook {hook} names {path!r}, which is not a payload file")
    return {str(k): str(v) for k, v in hooks.items()}


HOOKS = ("post-install", "selftest")


def load_document(raw: bytes) -> dict[str, Any]:
    """Manifest bytes as a JSON object, within the size a device reads (any signed format)."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError("oversize", f"manifest.json is {len(raw)} bytes, more than the "
                          f"{MAX_MANIFEST_BYTES} a device reads: shorten paths or split the image")
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise BundleError("bad-manifest", f"manifest.json is not JSON: {exc}") from exc
    _require(isinstance(doc, dict), "not an object")
    return cast(dict[str, Any], doc)


def check_identity(doc: dict[str, Any]) -> None:
    """The fields every signed manifest has: a safe name, a version, the signing key id."""
    _require(isinstance(doc.get("name"), str) and bool(_NAME_RE.match(doc["name"])), "bad name")
    parse_version(cast(str, doc.get("version")))  # checks the type too
    _require(isinstance(doc.get("key_id"), str), "'key_id' missing")


def parse_files(doc: dict[str, Any]) -> tuple[FileEntry, ...]:
    """The manifest's ``files``, each checked (safe path, size, SHA-256, mode), within limits."""
    files = doc.get("files")
    if not isinstance(files, list) or not files:
        raise BundleError("bad-manifest", "manifest: 'files' must list 1+ files")
    _check_file_count(len(files))
    entries = tuple(_file_entry(item) for item in files)
    paths = {e.path for e in entries}
    if len(paths) != len(entries):
        raise BundleError("duplicate-member", "manifest lists the same path twice")
    _require(sum(e.size for e in entries) <= MAX_BUNDLE_BYTES, "payload is larger than allowed")
    return entries


def parse_manifest(raw: bytes) -> Manifest:
    """Parse and validate manifest bytes (signature is checked separately, by the caller)."""
    doc = load_document(raw)
    _require(doc.get("format") == FORMAT, f"format {doc.get('format')!r} is not {FORMAT}")
    check_identity(doc)
    if doc.get("min_version") is not None:
        parse_version(doc["min_version"])
    entries = parse_files(doc)
    paths = {e.path for e in entries}
    permit = doc.get("downgrade_permit")
    _require(permit is None or isinstance(permit, dict), "'downgrade_permit' must be an object")
    add_keys = doc.get("add_keys") or {}
    _require(isinstance(add_keys, dict), "'add_keys' must be an object")
    return Manifest(
        name=doc["name"], version=doc["version"], hardware=_str_list(doc, "hardware"),
        arch=_str_list(doc, "arch"), key_id=doc["key_id"], files=entries,
        min_version=doc.get("min_version"), hooks=_hooks(doc, paths),
        downgrade_permit=permit, add_keys={str(k): str(v) for k, v in add_keys.items()},
        description=str(doc.get("description", "")), raw=raw,
    )


class Signed(Protocol):
    """What the tar format needs of a manifest: its bytes and the files they name.

    Both the OTA ``Manifest`` and an application bundle's manifest are such a
    thing; they share this one reader and writer, limits and checks included.
    """

    @property
    def files(self) -> tuple[FileEntry, ...]: ...

    @property
    def total_size(self) -> int: ...

    def encode(self) -> bytes: ...


M = TypeVar("M", bound=Signed)


# ---------------------------------------------------------------------------- compatibility


def check_compatible(
    manifest: Manifest, *, hardware: str, arch: str, current: str, committed: str | None = None
) -> None:
    """Refuse a bundle this device must not install (hardware, arch, min_version, rollback).

    ``current`` is the running version; ``committed`` the version anti-rollback protects.
    """
    if "*" not in manifest.hardware and hardware not in manifest.hardware:
        raise BundleError("wrong-hardware", f"bundle is for hardware {', '.join(manifest.hardware)}"
                          f", this device is {hardware}")
    if "*" not in manifest.arch and arch not in manifest.arch:
        raise BundleError("wrong-arch", f"bundle is for {', '.join(manifest.arch)}, "
                          f"this device is {arch}")
    if manifest.min_version and _known(current) and compare_versions(
            current, manifest.min_version) < 0:
        raise BundleError("min-version", f"bundle {manifest.version} needs at least "
                          f"{manifest.min_version} installed, this device runs {current}")
    floor = committed or current
    if _known(floor) and compare_versions(manifest.version, floor) < 0:
        _check_permit(manifest, floor)


def _known(version: str | None) -> bool:
    try:
        return version is not None and bool(parse_version(version))
    except BundleError:
        return False


def _check_permit(manifest: Manifest, floor: str) -> None:
    permit = manifest.downgrade_permit or {}
    if permit.get("version") != manifest.version:
        raise BundleError(
            "downgrade", f"bundle {manifest.version} is older than committed {floor} and carries "
            "no signed downgrade permit; build it with `downgrade_permit:` in the recipe",
        )


# ---------------------------------------------------------------------------- writing


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _tarinfo(name: str, size: int, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, 0
    info.uname = info.gname = "root"
    return info


def sign_manifest(manifest: Signed, private_key: Ed25519PrivateKey) -> tuple[bytes, bytes]:
    """The manifest bytes and their signature."""
    raw = manifest.encode()
    return raw, private_key.sign(raw)


def write_bundle(
    out: BinaryIO, manifest: Signed, private_key: Ed25519PrivateKey,
    sources: dict[str, Path], on_progress: Progress | None = None,
) -> bytes:
    """Write a signed bundle to `out`; `sources` maps each manifest path to a local file.

    Returns the manifest bytes. Sources are re-hashed while copied, so a file
    changed since the manifest was made is caught here rather than on a device.
    """
    raw, signature = sign_manifest(manifest, private_key)
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_tarinfo(MANIFEST, len(raw)), io.BytesIO(raw))
        tar.addfile(_tarinfo(SIGNATURE, len(signature)), io.BytesIO(signature))
        done = 0
        for entry in manifest.files:
            with open(sources[entry.path], "rb") as fh:
                reader = _HashingReader(fh)
                tar.addfile(_tarinfo(PAYLOAD + entry.path, entry.size, entry.mode), reader)
            if reader.digest.hexdigest() != entry.sha256:
                raise BundleError("hash-mismatch", f"{sources[entry.path]} changed while bundling")
            done += entry.size
            if on_progress:
                on_progress(done, manifest.total_size)
    return raw


class CountingReader:
    """Passes reads through and counts them: the size of the bundle as received.

    Integrity needs no second hash over the whole stream: the signed manifest
    and every file's SHA-256 already cover each byte that is installed.
    """

    def __init__(self, raw: Any) -> None:
        self.raw, self.count = raw, 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        return bytes(data)

    def drain(self) -> int:
        """Read to the end (tar padding); the total byte count."""
        while self.read(CHUNK):
            pass
        return self.count


class _HashingReader(io.RawIOBase):
    def __init__(self, fh: IO[bytes]) -> None:
        self.fh, self.digest = fh, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.digest.update(data)
        return data


# ---------------------------------------------------------------------------- reading


class PayloadSink(Protocol):
    """Where verified payload goes: ``open`` a file, ``write`` chunks, ``close`` it."""

    def begin(self, entry: FileEntry) -> None: ...
    def write(self, data: bytes) -> None: ...
    def end(self, entry: FileEntry) -> None: ...


class NullSink:
    """Verify only."""

    def begin(self, entry: FileEntry) -> None:
        pass

    def write(self, data: bytes) -> None:
        pass

    def end(self, entry: FileEntry) -> None:
        pass


class DirectorySink:
    """Writes payload files under `root` (created exclusively, never through links), fsync'd."""

    def __init__(self, root: Path, before_write: Callable[[], None] | None = None) -> None:
        self.root, self.before_write = root, before_write
        self._fd: int | None = None

    def begin(self, entry: FileEntry) -> None:
        target = self.root / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(target, flags, entry.mode)

    def write(self, data: bytes) -> None:
        if self.before_write:
            self.before_write()
        assert self._fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def end(self, entry: FileEntry) -> None:
        assert self._fd is not None
        os.fchmod(self._fd, entry.mode)
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _open_tar(stream: BinaryIO) -> tarstream.TarStream:
    return tarstream.TarStream(stream)


def _next(tar: tarstream.TarStream, expecting: str) -> tarfile.TarInfo | None:
    try:
        return tar.next()
    except tarstream.TarFormatError as exc:
        raise BundleError("truncated", f"bundle ends early or is corrupt before {expecting}: "
                          f"{exc}") from exc


def _read_small(tar: tarstream.TarStream, member: tarfile.TarInfo | None, name: str,
                limit: int) -> bytes:
    if member is None:
        raise BundleError("truncated", f"bundle ends before {name}")
    if member.name != name:
        raise BundleError("bad-format", f"expected {name} here, found {member.name!r}")
    if not member.isreg() or member.issparse() or member.size > limit:
        raise BundleError("oversize", f"{name} is not a regular file under {limit} bytes")
    parts, left = [], member.size
    while left:
        chunk = _read_chunk(tar, left, name)
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _read_chunk(tar: tarstream.TarStream, left: int, name: str) -> bytes:
    """The next piece of a member's data, as it arrived (at most CHUNK)."""
    try:
        data = tar.read(min(CHUNK, left))
    except (tarstream.TarFormatError, OSError) as exc:
        raise BundleError("truncated", f"bundle ends inside {name}: {exc}") from exc
    if not data:
        raise BundleError("truncated", f"bundle ends inside {name}")
    return data


def _header(tar: tarstream.TarStream, keyring: Keyring | None, parse: Callable[[bytes], M]) -> M:
    raw = _read_small(tar, _next(tar, MANIFEST), MANIFEST, MAX_MANIFEST_BYTES)
    signature = _read_small(tar, _next(tar, SIGNATURE), SIGNATURE, SIGNATURE_BYTES)
    try:
        kid = json.loads(raw).get("key_id")
    except (ValueError, AttributeError) as exc:
        raise BundleError("bad-signature",
                          "manifest.json is not JSON; it cannot be signed") from exc
    if keyring is not None:
        keyring.verify(str(kid), signature, raw)
    return parse(raw)


def read_manifest(stream: BinaryIO, keyring: Keyring | None = None) -> Manifest:
    """Read only the manifest (first member): cheap, for inspection and pre-checks.

    With a keyring the signature is verified too; payload is not read.
    """
    return _header(_open_tar(stream), keyring, parse_manifest)


def read_signed_manifest(stream: BinaryIO, keyring: Keyring | None,
                         parse: Callable[[bytes], M]) -> M:
    """`read_manifest` for any signed format: `parse` turns the manifest bytes into one."""
    return _header(_open_tar(stream), keyring, parse)


def _member_entry(member: tarfile.TarInfo, expected: dict[str, FileEntry],
                  seen: set[str]) -> FileEntry:
    name = member.name
    if not name.startswith(PAYLOAD):
        raise BundleError("unexpected-member", f"member {name!r} is outside payload/")
    path = safe_path(name[len(PAYLOAD):])
    if not member.isreg() or member.issparse():
        kind = "link" if member.issym() or member.islnk() else "device or special file"
        raise BundleError("unsafe-member", f"member {name!r} is a {kind}; only files are allowed")
    if path in seen:
        raise BundleError("duplicate-member", f"member {name!r} appears twice")
    entry = expected.get(path)
    if entry is None:
        raise BundleError("unexpected-member", f"member {name!r} is not in the signed manifest")
    if member.size != entry.size:
        raise BundleError("oversize" if member.size > entry.size else "size-mismatch",
                          f"member {name!r} is {member.size} bytes, manifest says {entry.size}")
    return entry


def _copy_member(tar: tarstream.TarStream, member: tarfile.TarInfo, entry: FileEntry,
                 sink: PayloadSink, tick: Callable[[int], None]) -> None:
    digest, left = hashlib.sha256(), entry.size
    sink.begin(entry)
    while left:
        chunk = _read_chunk(tar, left, member.name)
        digest.update(chunk)
        sink.write(chunk)
        left -= len(chunk)
        tick(len(chunk))
    if digest.hexdigest() != entry.sha256:
        raise BundleError("hash-mismatch", f"{entry.path}: SHA-256 does not match the manifest")
    sink.end(entry)


def read_bundle(
    stream: BinaryIO, keyring: Keyring | None, sink: PayloadSink | None = None,
    on_manifest: Callable[[Manifest], None] | None = None, on_progress: Progress | None = None,
) -> Manifest:
    """Verify a whole bundle while streaming its payload into `sink`.

    Order: signature (if `keyring`), then ``on_manifest`` (the caller's
    compatibility and space checks), then every payload member. Raises
    BundleError on the first problem; the sink then holds partial data the
    caller must discard.
    """
    return read_signed(stream, keyring, parse_manifest, sink, on_manifest, on_progress)


def read_signed(
    stream: BinaryIO, keyring: Keyring | None, parse: Callable[[bytes], M],
    sink: PayloadSink | None = None, on_manifest: Callable[[M], None] | None = None,
    on_progress: Progress | None = None,
) -> M:
    """`read_bundle` for any signed format (`parse` reads its manifest); the same checks."""
    tar = _open_tar(stream)
    manifest = _header(tar, keyring, parse)
    if on_manifest:
        on_manifest(manifest)
    expected = {e.path: e for e in manifest.files}
    seen: set[str] = set()
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if on_progress:
            on_progress(done[0], manifest.total_size)

    while (member := _next(tar, "the next payload file")) is not None:
        entry = _member_entry(member, expected, seen)
        _copy_member(tar, member, entry, sink or NullSink(), tick)
        seen.add(entry.path)
    missing = [p for p in expected if p not in seen]
    if missing:
        raise BundleError("truncated", f"bundle ends before {len(missing)} file(s), "
                          f"first {missing[0]!r}")
    return manifest


def build_manifest(
    *, name: str, version: str, hardware: Iterable[str], arch: Iterable[str], key: str,
    files: Iterable[FileEntry], min_version: str | None = None, **extra: Any,
) -> Manifest:
    """A validated Manifest (validation is the same parse the device runs)."""
    files = tuple(files)
    _check_file_count(len(files))  # before encoding a manifest far too large to send
    draft = Manifest(name=name, version=version, hardware=tuple(hardware), arch=tuple(arch),
                     key_id=key, files=files, min_version=min_version, **extra)
    return parse_manifest(draft.encode())
