"""``provision.archive`` and ``provision.usb``: a device's identity, built and put on a drive.

`provision.archive` is `fleet.provisioning.build_archives` for the task's device
(certificate from the fleet CA, host key pinned now, signed manifest); an
unexpired archive built before is used again, and a device the registry knows as
provisioned is left alone. `provision.usb` writes that archive to a mounted drive
and reads it back (`write_to_drive`). The CA passphrase comes from
``FLEET_CA_PASSPHRASE`` (a play has no prompt); check mode needs none. Archives
hold secrets: only their path and digest ever reach data or diff.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from fleet_runtime import provisioning as fmt
from nornir.core.inventory import Host

from fleet import pki
from fleet import provisioning as prov
from fleet.errors import ConfigError
from fleet.play.operations import OpContext, Outcome, operation
from fleet.play.ops._host import host_of
from fleet.project import Project
from fleet.provisioning.records import provisioned_devices

# One build at a time in this process: the CA index and known_hosts are appended to.
_BUILDING = threading.Lock()


@operation("provision.archive")
def archive(ctx: OpContext, *, valid_for: str = "7d", cert_days: int = 825,
            out: str = ".fleet/archives") -> Outcome:
    """Build the device's provisioning archive unless a usable one exists already."""
    host = host_of(ctx)
    folder = _path(ctx.project, out)
    return _archive(ctx, host, folder, valid_for, cert_days)[0]


@operation("provision.usb")
def usb(ctx: OpContext, *, mount: str, force: bool = False, valid_for: str = "7d",
        cert_days: int = 825) -> Outcome:
    """Write the device's archive (built now if needed) to the drive at `mount`, read back."""
    host = host_of(ctx)
    drive = _path(ctx.project, mount)
    prov.check_drive(drive, force=force)
    target = drive / fmt.archive_name(host.name)
    built, path = _archive(ctx, host, ctx.project.state_dir / "archives", valid_for, cert_days)
    if built.failed or (path is None and not ctx.check):
        return built
    diff = {"drive": {"before": None, "after": str(target)}}
    if ctx.check:
        return Outcome(changed=True, diff=diff)
    assert path is not None  # noqa: S101 - set whenever the build did not fail
    written = prov.write_to_drive(path, drive, force=force)
    prov.verify_file(ctx.project, written.path)
    return Outcome(changed=True, diff=diff,
                   data={"path": str(written.path), "bytes": written.bytes,
                         "sha256": written.sha256})


def _archive(ctx: OpContext, host: Host, folder: Path, valid_for: str,
             cert_days: int) -> tuple[Outcome, Path | None]:
    spec = prov.DeviceSpec.from_host(host)
    prov.check_specs([spec])
    settings = prov.BuildSettings(folder, prov.parse_duration(valid_for), cert_days)
    if provisioned_devices(ctx.project, [spec.name]):
        return Outcome(msg="already provisioned: left alone"), None
    found = prov.reusable_archive(ctx.project, spec, folder)
    if found is not None:
        return Outcome(msg="an unexpired archive exists", data={"archive": str(found)}), found
    diff = {"archive": {"before": None, "after": str(folder / fmt.archive_name(spec.name))}}
    if ctx.check:
        return Outcome(changed=True, diff=diff), None
    with _BUILDING:
        report = prov.build_archives(ctx.project, pki.load_ca(ctx.project, _passphrase()),
                                     [spec], settings, workers=1)
    if report.failed:
        return Outcome(failed=True, msg=report.failed[spec.name]), None
    built = report.built[0]
    return Outcome(changed=True, diff=diff, data={"archive": str(built.path),
                                                  "sha256": built.sha256}), built.path


def _passphrase() -> bytes:
    value = os.environ.get(pki.PASSPHRASE_ENV)
    if not value:
        raise ConfigError(f"the fleet CA key is locked; set {pki.PASSPHRASE_ENV}",
                          fix="a playbook cannot prompt: export the passphrase first")
    return value.encode()


def _path(project: Project, text: str) -> Path:
    return Path(text) if Path(text).is_absolute() else project.root / text
