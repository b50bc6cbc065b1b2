"""Firmware: release signing keys, and recipes under firmware/ built into signed OTA bundles.

Release keys are Ed25519, separate from the fleet CA::

    certs/release/<name>.key   private key, PKCS#8 encrypted with a passphrase, 0600, git-ignored
    certs/release/<name>.pub   public key (PEM); devices trust these in etc/fleet/release-keys/

The passphrase comes from ``FLEET_RELEASE_PASSPHRASE`` or the CLI's prompt.
A recipe names the image; ``build`` turns it into ``out/firmware/<name>-<version>.bundle``
in the format of ``fleet_runtime.bundle`` (the one place that knows it).

>>> key = keygen(project, "release", passphrase=b"correct horse")      # doctest: +SKIP
>>> built = build(project, Path("firmware/lab-1.1.0.yaml"),
...               passphrase=b"correct horse")                           # doctest: +SKIP
>>> built.manifest.version                                             # doctest: +SKIP
'1.1.0'
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleet_runtime import bundle
from fleet_runtime.bundle import BundleError, FileEntry, Keyring, Manifest
from fleet_runtime.durable import atomic_file, atomic_write

from fleet import digests
from fleet.errors import ConfigError, FleetError, UsageError
from fleet.project import Project

PASSPHRASE_ENV = "FLEET_RELEASE_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret
MIN_PASSPHRASE = 8
DEFAULT_KEY = "release"
_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")

RECIPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "version", "hardware", "arch"],
    "properties": {
        "name": {"type": "string", "pattern": bundle.NAME_PATTERN},
        "version": {"type": "string", "pattern": bundle.VERSION_PATTERN},
        "description": {"type": "string"},
        "hardware": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "arch": {"oneOf": [{"type": "string"},
                           {"type": "array", "items": {"type": "string"}, "minItems": 1}]},
        "min_version": {"type": "string", "pattern": bundle.VERSION_PATTERN},
        "key": {"type": "string", "description": "release key name under certs/release/"},
        "payload": {"type": "string", "description": "directory (relative to the recipe)"},
        "files": {"type": "object", "additionalProperties": {"type": "string"},
                  "description": "image path -> source file (relative to the recipe)"},
        "generate": {"type": "object", "additionalProperties": {"type": "string"},
                     "description": "image path -> text; {name} and {version} are filled in"},
        "executable": {"type": "array", "items": {"type": "string"}},
        "hooks": {"type": "object", "additionalProperties": False,
                  "properties": {"selftest": {"type": "string"},
                                 "post-install": {"type": "string"}}},
        "downgrade_permit": {"type": "object", "required": ["reason"],
                             "properties": {"reason": {"type": "string", "minLength": 1}}},
        "add_keys": {"type": "array", "items": {"type": "string"},
                     "description": "release key names to ship (key rotation)"},
    },
}


# ---------------------------------------------------------------------------- release keys


@dataclass(frozen=True)
class ReleaseKey:
    name: str
    key_id: str
    public: Path
    private: Path

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "key_id": self.key_id, "public": str(self.public),
                "private": str(self.private), "has_private": self.private.exists()}


def release_dir(project: Project) -> Path:
    return project.certs / "release"


def passphrase_from_env() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode() if value else None


def _checked(passphrase: bytes | None, *, new: bool = False) -> bytes:
    if not passphrase:
        raise UsageError("the release key is locked: no passphrase given",
                         fix=f"set {PASSPHRASE_ENV} or run the command in a terminal")
    if new and len(passphrase) < MIN_PASSPHRASE:
        raise UsageError(f"the release key passphrase needs at least {MIN_PASSPHRASE} characters")
    return passphrase


def _key_paths(project: Project, name: str) -> tuple[Path, Path]:
    if not _KEY_NAME.match(name):
        raise UsageError(f"bad release key name {name!r}", fix="use letters, digits, - and _")
    return release_dir(project) / f"{name}.pub", release_dir(project) / f"{name}.key"


def keygen(project: Project, name: str = DEFAULT_KEY, *, passphrase: bytes | None,
           force: bool = False) -> ReleaseKey:
    """Create an Ed25519 release key: private half encrypted at rest (0600), public beside it."""
    secret = _checked(passphrase, new=True)
    pub_path, key_path = _key_paths(project, name)
    if (pub_path.exists() or key_path.exists()) and not force:
        raise UsageError(f"release key '{name}' already exists", where=str(pub_path),
                         fix="pick another --name (rotation), or --force to replace it")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.BestAvailableEncryption(secret))
    release_dir(project).mkdir(parents=True, exist_ok=True)
    atomic_write(key_path, pem, 0o600)
    atomic_write(pub_path, bundle.public_pem(key.public_key()), 0o644)
    return ReleaseKey(name, bundle.key_id(key.public_key()), pub_path, key_path)


def release_keys(project: Project) -> list[ReleaseKey]:
    """Every release key of the project (public halves), by name."""
    out = []
    for pub in sorted(release_dir(project).glob("*.pub")):
        key = _load_public(pub)
        out.append(ReleaseKey(pub.stem, bundle.key_id(key), pub, pub.with_suffix(".key")))
    return out


def _load_public(path: Path) -> Any:
    try:
        return bundle.load_public_key(path.read_bytes(), str(path))
    except BundleError as exc:
        raise ConfigError(exc.message, where=str(path), fix="remove or replace the file") from None


def release_key(project: Project, name: str | None = None) -> ReleaseKey:
    keys = {k.name: k for k in release_keys(project)}
    if not keys:
        raise ConfigError("no release key in this project", where=str(release_dir(project)),
                          fix="run `fleet firmware keygen`")
    if name is None and len(keys) > 1 and DEFAULT_KEY not in keys:
        raise UsageError(f"several release keys ({', '.join(keys)})",
                         fix="name one with `key:` in the recipe or --key")
    chosen = name or (DEFAULT_KEY if DEFAULT_KEY in keys else next(iter(keys)))
    if chosen not in keys:
        raise ConfigError(f"no release key named '{chosen}'", where=str(release_dir(project)),
                          fix=f"known: {', '.join(keys)}; "
                          f"or `fleet firmware keygen --name {chosen}`")
    return keys[chosen]


def load_signing_key(key: ReleaseKey, passphrase: bytes | None) -> Ed25519PrivateKey:
    """The private half of `key`, unlocked by `passphrase`."""
    secret = _checked(passphrase)
    try:
        private = serialization.load_pem_private_key(key.private.read_bytes(), password=secret)
    except FileNotFoundError:
        raise ConfigError(f"release key '{key.name}' has no private half here",
                          where=str(key.private),
                          fix="build on the machine that holds it, or restore it from backup"
                          ) from None
    except (ValueError, TypeError):
        raise FleetError(f"wrong passphrase for release key '{key.name}'", where=str(key.private),
                         fix=f"check {PASSPHRASE_ENV}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise ConfigError("release key is not Ed25519", where=str(key.private))
    return private


def keyring(project: Project) -> Keyring:
    """The project's release public keys: what `verify` checks bundles against."""
    ring = Keyring()
    for key in release_keys(project):
        ring.add(_load_public(key.public))
    return ring


def export_keyring(project: Project, dest: Path) -> list[Path]:
    """Copy the release public keys into `dest` (a device's etc/fleet/release-keys/)."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for key in release_keys(project):
        target = dest / f"{key.name}.pub"
        shutil.copyfile(key.public, target)
        written.append(target)
    return written


# ---------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class Recipe:
    path: Path
    doc: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.doc["name"])

    @property
    def version(self) -> str:
        return str(self.doc["version"])

    @property
    def bundle_name(self) -> str:
        return f"{self.name}-{self.version}.bundle"


def load_recipe(path: Path) -> Recipe:
    from fleet.schema import load_yaml_validated

    doc = load_yaml_validated(path, RECIPE_SCHEMA)
    return Recipe(path.resolve(), doc)


def recipes(project: Project) -> list[Recipe]:
    found = sorted(project.firmware.glob("*.yaml")) + sorted(project.firmware.glob("*.yml"))
    return [load_recipe(p) for p in found]


def _source(recipe: Recipe, relative: str, what: str) -> Path:
    path = (recipe.path.parent / relative).resolve()
    if not path.exists():
        raise ConfigError(f"{what} {relative!r} does not exist", where=str(recipe.path),
                          fix="fix the path (relative to the recipe)")
    return path


def _safe(recipe: Recipe, image_path: str) -> str:
    try:
        return bundle.safe_path(image_path)
    except BundleError as exc:
        raise ConfigError(exc.message, where=str(recipe.path),
                          fix="use a relative image path") from None


def collect_sources(recipe: Recipe, workdir: Path) -> dict[str, Path]:
    """Image path -> local file: the payload dir, then `files`, then `generate` (later wins)."""
    sources: dict[str, Path] = {}
    if "payload" in recipe.doc:
        root = _source(recipe, recipe.doc["payload"], "payload directory")
        for path in sorted(root.rglob("*")):
            if path.is_symlink():
                raise ConfigError(f"payload contains a link: {path}", where=str(recipe.path),
                                  fix="bundles carry regular files only; copy the target in")
            if path.is_file():
                sources[_safe(recipe, path.relative_to(root).as_posix())] = path
    for image_path, src in (recipe.doc.get("files") or {}).items():
        safe = _safe(recipe, image_path)
        sources[safe] = _source(recipe, src, "file")
    for image_path, text in (recipe.doc.get("generate") or {}).items():
        target = workdir / _safe(recipe, image_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text.replace("{name}", recipe.name).replace("{version}", recipe.version))
        sources[_safe(recipe, image_path)] = target
    if not sources:
        raise ConfigError("the recipe names no files", where=str(recipe.path),
                          fix="add `payload:`, `files:` or `generate:`")
    return sources


def _mode(recipe: Recipe, image_path: str, source: Path) -> int:
    listed = image_path in (recipe.doc.get("executable") or []) or \
        image_path in (recipe.doc.get("hooks") or {}).values()
    return 0o755 if listed or os.access(source, os.X_OK) else 0o644


def _add_keys(project: Project, recipe: Recipe) -> dict[str, str]:
    out = {}
    for name in recipe.doc.get("add_keys") or []:
        key = release_key(project, name)
        out[key.key_id] = key.public.read_text()
    return out


def make_manifest(project: Project, recipe: Recipe, sources: dict[str, Path], key: ReleaseKey,
                  on_file: Callable[[str], None] | None = None) -> Manifest:
    entries = []
    for image_path, source in sources.items():
        if on_file:
            on_file(image_path)
        entries.append(FileEntry(image_path, source.stat().st_size, bundle.sha256_file(source),
                                 _mode(recipe, image_path, source)))
    arch = recipe.doc["arch"]
    permit = recipe.doc.get("downgrade_permit")
    extra: dict[str, Any] = {
        "hooks": dict(recipe.doc.get("hooks") or {}), "add_keys": _add_keys(project, recipe),
        "description": recipe.doc.get("description", ""),
        "downgrade_permit": {"version": recipe.version, **permit} if permit else None,
    }
    try:
        return bundle.build_manifest(
            name=recipe.name, version=recipe.version, hardware=recipe.doc["hardware"],
            arch=[arch] if isinstance(arch, str) else arch, key=key.key_id, files=entries,
            min_version=recipe.doc.get("min_version"), **extra)
    except BundleError as exc:
        raise ConfigError(exc.message, where=str(recipe.path), fix="correct the recipe") from None


@dataclass(frozen=True)
class Built:
    path: Path
    manifest: Manifest
    key: ReleaseKey


def default_out(project: Project) -> Path:
    return project.root / "out" / "firmware"


def build(project: Project, recipe_path: Path, *, passphrase: bytes | None,
          out_dir: Path | None = None, key_name: str | None = None,
          on_progress: bundle.Progress | None = None) -> Built:
    """Recipe -> signed bundle (written atomically). Everything is checked before signing."""
    recipe = load_recipe(recipe_path)
    key = release_key(project, key_name or recipe.doc.get("key"))
    private = load_signing_key(key, passphrase)
    out = (out_dir or default_out(project)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fleet-firmware-") as work:
        sources = collect_sources(recipe, Path(work))
        manifest = make_manifest(project, recipe, sources, key)
        target = out / recipe.bundle_name
        with atomic_file(target, 0o644, prefix=f".{recipe.bundle_name}.") as fh:
            written = digests.HashingWriter(fh)  # uploads need its hash: no pass to read it back
            bundle.write_bundle(cast(BinaryIO, written), manifest, private, sources, on_progress)
        digests.remember(target, written.digest.hexdigest())
    return Built(target, manifest, key)


# ---------------------------------------------------------------------------- reading bundles


def _open(path: Path) -> Any:
    try:
        return open(path, "rb")  # noqa: SIM115 - callers close it
    except FileNotFoundError:
        raise UsageError(f"no bundle at {path}",
                         fix="check the path, or `fleet firmware build`") from None


def _bundle_error(path: Path, exc: BundleError) -> FleetError:
    return FleetError(f"bundle refused: {exc.code}: {exc.message}", where=str(path),
                      fix="rebuild it with `fleet firmware build`, or check the keyring")


def inspect(path: Path) -> Manifest:
    """The manifest only (signature not checked; use `verify` for that)."""
    with _open(path) as fh:
        try:
            return bundle.read_manifest(fh)
        except BundleError as exc:
            raise _bundle_error(path, exc) from None


def target_version(path: Path) -> str:
    """The version a bundle installs, read from its first member without extracting."""
    return inspect(path).version


def verify(project: Project, path: Path, on_progress: bundle.Progress | None = None) -> Manifest:
    """Full check against the project's release keys: signature, then every size and SHA-256."""
    with _open(path) as fh:
        try:
            return bundle.read_bundle(fh, keyring(project), on_progress=on_progress)
        except BundleError as exc:
            raise _bundle_error(path, exc) from None


def describe(manifest: Manifest, path: Path | None = None) -> dict[str, Any]:
    """A manifest as plain data for `inspect --json` and tables."""
    out = manifest.as_json()
    out.update(total_size=manifest.total_size, manifest_sha256=manifest.digest)
    out.pop("add_keys", None)
    out["add_keys"] = sorted(manifest.add_keys)
    if path is not None:
        out["path"] = str(path)
        out["bundle_size"] = path.stat().st_size
    return out


def listing(project: Project, out_dir: Path | None = None) -> dict[str, Any]:
    """Recipes under firmware/, bundles built under out/firmware/, and the release keys."""
    out = out_dir or default_out(project)
    built = {p.name: p for p in sorted(out.glob("*.bundle"))} if out.is_dir() else {}
    rows = []
    for recipe in recipes(project):
        path = built.pop(recipe.bundle_name, None)
        rows.append({"recipe": str(recipe.path.relative_to(project.root))
                     if recipe.path.is_relative_to(project.root) else str(recipe.path),
                     "name": recipe.name, "version": recipe.version,
                     "bundle": str(path) if path else None})
    for name, path in built.items():
        try:
            manifest = inspect(path)
            rows.append({"recipe": None, "name": manifest.name, "version": manifest.version,
                         "bundle": str(path)})
        except FleetError:
            rows.append({"recipe": None, "name": name, "version": "?", "bundle": str(path)})
    return {"bundles": rows, "keys": [k.record() for k in release_keys(project)]}
