"""Helpers for provisioning tests: a project with a fleet CA, archives, and zip surgery."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from fleet_runtime import provisioning as fmt
from labkit import HAVE_SSHD, run_cli  # noqa: F401  (re-exported for the provisioning tests)

from fleet import pki
from fleet import provisioning as prov
from fleet.project import Project

PASSPHRASE = b"test-passphrase"


@dataclass
class Factory:
    """Builds real archives with a real CA in a throwaway project."""

    project: Project
    ca: pki.FleetCA

    def spec(
        self,
        name: str = "cam-01",
        *,
        serial: str | None = "SN-0001",
        network: dict[str, Any] | None = None,
        port: int = 2222,
    ) -> prov.DeviceSpec:
        return prov.DeviceSpec(
            name=name,
            site="berlin",
            hostname="127.0.0.1",
            port=port,
            serial=serial,
            hardware="jetson-orin",
            arch="aarch64",
            network=network,
        )

    def build(
        self, name: str = "cam-01", *, valid_for: timedelta = timedelta(days=1), **kw: Any
    ) -> prov.BuiltArchive:
        settings = prov.BuildSettings(self.project.root / "out", valid_for=valid_for)
        report = prov.build_archives(self.project, self.ca, [self.spec(name, **kw)], settings)
        assert not report.failed, report.failed
        return report.built[0]


def make_factory(root: Path, *, key_type: str = "ec-p256", org: str = "Acme") -> Factory:
    root.mkdir(parents=True, exist_ok=True)
    project = Project.locate(root)
    ca = pki.init_ca(project, org=org, key_type=key_type, passphrase=PASSPHRASE)
    return Factory(project, ca)


def members_of(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def write_zip(
    path: Path,
    entries: list[tuple[str, bytes]] | dict[str, bytes],
    *,
    symlinks: tuple[str, ...] = (),
) -> Path:
    """A zip with exactly these entries (duplicates allowed when given as a list)."""
    items = list(entries.items()) if isinstance(entries, dict) else entries
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in items:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o120777 if name in symlinks else 0o100600) << 16
            zf.writestr(info, data)
    path.write_bytes(buffer.getvalue())
    return path


def resign(members: dict[str, bytes], key: Any, **changes: Any) -> dict[str, bytes]:
    """Rewrite manifest.json for the current members (plus `changes`) and sign it with `key`."""
    manifest = json.loads(members[fmt.MANIFEST])
    body = {k: v for k, v in members.items() if k not in (fmt.MANIFEST, fmt.SIGNATURE)}
    manifest["members"] = {
        n: {"sha256": fmt.sha256_hex(d), "size": len(d)} for n, d in body.items()
    }
    manifest.update(changes)
    raw = json.dumps(manifest, sort_keys=True).encode()
    return {fmt.MANIFEST: raw, fmt.SIGNATURE: fmt.sign_bytes(key, raw), **body}
