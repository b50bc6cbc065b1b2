"""Helpers to build signed OTA bundles and lab-like device roots in tests (no controller code)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleet_runtime import bundle, slots
from fleet_runtime.layout import Layout, atomic_write, atomic_write_json

HARDWARE, ARCH = "jetson-xavier-nx", "aarch64"


def new_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def trust(layout: Layout, key: Ed25519PrivateKey) -> str:
    """Install `key`'s public half in the device keyring; returns its key id."""
    kid = bundle.key_id(key.public_key())
    atomic_write(layout.release_keys / f"{kid}.pub", bundle.public_pem(key.public_key()))
    return kid


def make_device(root: Path, key: Ed25519PrivateKey | None = None, version: str = "1.0.0") -> Layout:
    """A provisioned device root: identity, factory slot a, keyring."""
    layout = Layout(root)
    atomic_write_json(layout.device_json, {"name": root.name, "serial": "S1", "site": "lab",
                                           "hardware": HARDWARE, "arch": ARCH})
    (layout.slot("a") / "opt/edgefleet").mkdir(parents=True)
    (layout.slot("a") / "opt/edgefleet/VERSION").write_text(version + "\n")
    layout.staging.mkdir(parents=True, exist_ok=True)
    slots.factory_reset_state(layout, version)
    if key is not None:
        trust(layout, key)
    return layout


def entries(files: dict[str, bytes], modes: dict[str, int] | None = None) -> list[bundle.FileEntry]:
    return [bundle.FileEntry(p, len(d), hashlib.sha256(d).hexdigest(), (modes or {}).get(p, 0o644))
            for p, d in files.items()]


def make_manifest(key: Ed25519PrivateKey, files: dict[str, bytes], *, version: str = "1.1.0",
                  modes: dict[str, int] | None = None, **extra: Any) -> bundle.Manifest:
    fields: dict[str, Any] = {"name": "lab-image", "version": version, "hardware": [HARDWARE],
                              "arch": [ARCH], "min_version": "1.0.0"}
    fields.update(extra)
    return bundle.build_manifest(key=bundle.key_id(key.public_key()),
                                 files=entries(files, modes), **fields)


def make_bundle(key: Ed25519PrivateKey, files: dict[str, bytes] | None = None, **kw: Any) -> bytes:
    """A valid signed bundle in memory."""
    files = files if files is not None else default_files(kw.get("version", "1.1.0"))
    manifest = make_manifest(key, files, **kw)
    out = io.BytesIO()
    tmp = {}
    raw, sig = bundle.sign_manifest(manifest, key)
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        add(tar, bundle.MANIFEST, raw)
        add(tar, bundle.SIGNATURE, sig)
        for entry in manifest.files:
            add(tar, bundle.PAYLOAD + entry.path, files[entry.path], entry.mode)
    del tmp
    return out.getvalue()


def default_files(version: str) -> dict[str, bytes]:
    return {
        "opt/edgefleet/VERSION": f"{version}\n".encode(),
        "opt/edgefleet/models/detector.onnx": bytes(range(256)) * 64,
        "etc/os-release": f'NAME="edgefleet OS"\nVERSION_ID="{version}"\n'.encode(),
    }


def add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644,
        kind: bytes = tarfile.REGTYPE, linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.type, info.linkname = len(data), mode, kind, linkname
    if kind != tarfile.REGTYPE:
        info.size = 0
    tar.addfile(info, io.BytesIO(data) if info.size else None)


def raw_bundle(manifest_raw: bytes, signature: bytes,
               members: list[tuple[str, bytes, bytes, str]]) -> bytes:
    """A hand-made (possibly hostile) bundle: members are (name, data, tar type, linkname)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add(tar, bundle.MANIFEST, manifest_raw)
        add(tar, bundle.SIGNATURE, signature)
        for name, data, kind, link in members:
            add(tar, name, data, kind=kind, linkname=link)
    return out.getvalue()


def signed(key: Ed25519PrivateKey, doc: dict[str, Any]) -> tuple[bytes, bytes]:
    raw = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
    return raw, key.sign(raw)
