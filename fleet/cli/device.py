"""fleet device: the device side on a real box (Debian package, first contact over SSH)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fleet.cli import options as o
from fleet.cli.context import app_of
from fleet.errors import UsageError

app = typer.Typer(help="The device side on a real box: its Debian package, its bootstrap.",
                  no_args_is_help=True)


@app.command()
def package(
    ctx: typer.Context,
    arch: Annotated[str, typer.Option(help="target architecture: arm64 (Jetson) or amd64")]
    = "arm64",
    out: Annotated[Path, typer.Option(help="folder for the .deb")] = Path("dist"),
    extras: Annotated[str, typer.Option(
        help="edgefleet-runtime extras to bundle, comma-separated (mqtt, vision; '' for none)")]
    = "mqtt",
    python: Annotated[str, typer.Option(
        help="the target's python3 version (Debian 12: 3.11, Ubuntu 22.04 / JetPack 6: 3.10)")]
    = "3.11",
    revision: Annotated[int, typer.Option(help="Debian revision (raise it to upgrade a box)")] = 1,
    wheelhouse: Annotated[Optional[Path], typer.Option(
        help="wheel cache (default .fleet/cache/wheels in the project)")] = None,
    json: o.Json = False,
) -> None:
    """Build the Debian package of the device side (docs/device-install.md).

    The agent and runtime in a venv under /opt/edgefleet, systemd units, the device
    layout and a runtime user, in edgefleet-runtime_<version>_<arch>.deb.

    Wheels for the target are downloaded once into the wheelhouse; later builds need no
    network. Nothing is downloaded on the device.
    """
    from fleet import device_package as dp

    a = app_of(ctx)
    with a.guarded():
        cache = wheelhouse or a.project.state_dir / "cache/wheels"
        settings = dp.PackageSettings(
            arch=arch, out_dir=out, wheelhouse=cache,
            extras=tuple(e.strip() for e in extras.split(",") if e.strip()),
            python=python, revision=revision)
        settings.check()
        a.display_info(f"building {dp.PACKAGE} for {arch} (Python {python}, extras: "
                       f"{', '.join(settings.extras) or 'none'})")
        built = dp.build(settings)
    if json:
        a.output_json({"path": str(built.path), "arch": built.arch, "version": built.version,
                       "extras": list(built.extras), "size": built.size,
                       "installed_kib": built.installed_kib, "wheels": built.wheels,
                       "downloaded": built.downloaded})
        return
    a.display_success(f"{built.path} ({built.size / 1e6:.1f} MB, "
                      f"{built.installed_kib / 1024:.0f} MiB installed)")
    a.display_info(f"  {len(built.wheels)} Python distributions; wheels "
                   f"{'downloaded into' if built.downloaded else 'from'} {settings.cache}")


def _password(prompt: bool) -> str | None:
    import os
    import sys

    from fleet.bootstrap import PASSWORD_ENV

    if not prompt:
        return None
    value = os.environ.get(PASSWORD_ENV)
    if value:
        return value
    if not sys.stdin.isatty():
        raise UsageError(f"no terminal to ask for the box's password; set {PASSWORD_ENV}")
    return str(typer.prompt("password of the box's user", hide_input=True, err=True))


def _confirm(offered: object, host: str, port: int, expected: str | None) -> None:
    """The one unpinned host key: checked against --host-key-fingerprint, or by the operator."""
    import sys

    from fleet.bootstrap import OfferedKey, check_fingerprint

    assert isinstance(offered, OfferedKey)
    where = f"{host}:{port}"
    if expected is not None:
        check_fingerprint(offered, expected, where)
        return
    if not sys.stdin.isatty():
        raise UsageError(f"the host key of {where} is not pinned and nobody can confirm it here "
                         f"(it offers {offered.fingerprint})",
                         fix="run `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the box's "
                             "console and pass --host-key-fingerprint SHA256:...")
    typer.echo(f"The box offers this host key:\n  {offered.keygen_line(host, port)}", err=True)
    typer.echo("Compare it with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the box's "
               "console.", err=True)
    if not typer.confirm("Is it the same key?", default=False, err=True):
        raise UsageError(f"host key of {where} not confirmed; nothing was changed")


@app.command()
def bootstrap(
    ctx: typer.Context,
    host: Annotated[str, typer.Argument(help="the box's address")],
    port: Annotated[int, typer.Option(help="its SSH port")] = 22,
    user: Annotated[str, typer.Option(help="its admin user (root, or one with sudo)")] = "root",
    password_prompt: Annotated[bool, typer.Option(
        "--password-prompt", help="log in with the user's password (asked, or from "
        "FLEET_BOOTSTRAP_PASSWORD)")] = False,
    key: Annotated[Optional[Path], typer.Option(help="log in with this private key (it is "
                                                "removed from the box afterwards)")] = None,
    name: Annotated[Optional[str], typer.Option(help="device name (default: HOST)")] = None,
    site: Annotated[str, typer.Option(help="the device's site")] = "default",
    hardware: Annotated[Optional[str], typer.Option(help="hardware model, e.g. jetson-orin")]
    = None,
    host_key_fingerprint: Annotated[Optional[str], typer.Option(
        help="the box's host key, SHA256:... as `ssh-keygen -lf` shows it on its console")] = None,
    package: Annotated[Optional[Path], typer.Option(
        help="the .deb to install (`fleet device package`); lab devices need none")] = None,
    json: o.Json = False,
) -> None:
    """First contact with a box already in the field (docs/device-install.md).

    Confirms its host key, installs the package, gives it an identity as USB provisioning
    would, pins its new host key, closes SSH to the first-contact credential, registers it.
    The CA passphrase comes from FLEET_CA_PASSPHRASE or a prompt.
    """
    from fleet import bootstrap as bs
    from fleet import pki
    from fleet import provisioning as prov
    from fleet.cli.ca import passphrase

    a = app_of(ctx)
    with a.guarded():
        contact = bs.FirstContact(host, port, user, _password(password_prompt), key)
        contact.check()
        spec = prov.DeviceSpec(name=prov.check_name(name or host), site=site, hostname=host,
                               port=port, hardware=hardware)
        prov.check_specs([spec])
        from fleet.lab.bootstrap import lab_installer_for

        installer = (lab_installer_for(a.project, contact)
                     or bs.installer_for(a.project, contact, package))
        offered = bs.offered_key(host, port)
        _confirm(offered, host, port, host_key_fingerprint)
        ca = pki.load_ca(a.project, passphrase(a))
        out = a.project.state_dir / "bootstrap"
        report = bs.Bootstrap(a.project, ca, contact, spec, installer, out).run(offered)
    if json:
        a.output_json(report)
        return
    for step in report["steps"]:
        detail = step["detail"]
        text = "; ".join(detail) if isinstance(detail, list) else str(detail)
        a.display_info(f"  {step['step']:<13} {text}")
    a.display_success(f"{report['device']} bootstrapped: pinned, keyed, registered")
