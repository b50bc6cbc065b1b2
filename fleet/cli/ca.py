"""fleet ca: the fleet's root certificate authority (init, show, revoke, crl)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from fleet.cli import options as o
from fleet.cli.context import CliContext, app_of

app = typer.Typer(
    help="The fleet CA: device certificates and provisioning signatures.", no_args_is_help=True
)


def passphrase(a: CliContext, *, confirm: bool = False) -> bytes:
    """FLEET_CA_PASSPHRASE, else a hidden prompt on a terminal; never echoed or stored."""
    from fleet.pki import PASSPHRASE_ENV

    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value.encode()
    if not sys.stdin.isatty():
        a.abort(f"the fleet CA key is locked; set {PASSPHRASE_ENV} or run in a terminal", 2)
    return str(
        typer.prompt("Fleet CA passphrase", hide_input=True, confirmation_prompt=confirm)
    ).encode()


@app.command()
def init(
    ctx: typer.Context,
    org: Annotated[
        str, typer.Option(help="organisation named in the CA certificate")
    ] = "edgefleet",
    key_type: Annotated[str, typer.Option(help="ec-p256 | rsa2048 | ec-p384")] = "ec-p256",
    force: Annotated[
        bool, typer.Option(help="replace an existing CA (old devices stop verifying)")
    ] = False,
    json: o.Json = False,
) -> None:
    """Create the fleet root CA; its key is stored encrypted with your passphrase."""
    from fleet import pki

    a = app_of(ctx)
    if key_type not in pki.KEY_TYPES:
        a.abort(f"unknown --key-type '{key_type}'; use one of {', '.join(pki.KEY_TYPES)}", 2)
    with a.guarded():
        ca = pki.init_ca(
            a.project,
            org=org,
            key_type=key_type,
            passphrase=passphrase(a, confirm=True),
            force=force,
        )
        info = pki.describe(a.project)
    if json:
        a.output_json(info)
        return
    a.display_success(f"fleet CA created: {ca.cert.subject.rfc4514_string()} ({key_type})")
    a.display_info(
        f"certificate {info['certificate']}\nprivate key {info['private_key']} "
        "(encrypted, git-ignored: back it up somewhere safe)"
    )
    a.output(info["fingerprint"])


@app.command()
def show(ctx: typer.Context, json: o.Json = False) -> None:
    """Show the fleet CA: subject, key type, fingerprint, validity, issued and revoked counts."""
    from fleet import pki

    a = app_of(ctx)
    with a.guarded():
        info = pki.describe(a.project)
    if json:
        a.output_json(info)
        return
    from rich.table import Table

    table = Table(title="fleet CA", title_justify="left", show_header=False)
    for key in (
        "subject",
        "key_type",
        "fingerprint",
        "not_before",
        "not_after",
        "certificate",
        "private_key",
        "key_encrypted",
        "issued",
        "devices",
        "revoked",
        "crl",
        "crl_next_update",
    ):
        table.add_row(key.replace("_", " "), str(info[key]))
    a.output(table)


@app.command()
def revoke(
    ctx: typer.Context,
    device: str,
    reason: Annotated[str, typer.Option(help="recorded with the revocation")] = "unspecified",
    json: o.Json = False,
) -> None:
    """Revoke every certificate issued to DEVICE and rewrite the CRL (certs/crl.pem)."""
    from fleet import pki

    a = app_of(ctx)
    with a.guarded():
        ca = pki.load_ca(a.project, passphrase(a))
        serials = ca.revoke(device, reason=reason)
        lab_serials = _revoke_lab_identity(a, device)
        broker = _restart_lab_broker(a)
    if json:
        a.output_json({"device": device, "revoked": serials, "crl": str(ca.paths.crl),
                       "lab_broker_revoked": lab_serials, "lab_broker_restarted": broker})
        return
    a.display_success(f"{device}: revoked {len(serials)} certificate(s); CRL {ca.paths.crl}")


@app.command()
def crl(ctx: typer.Context, json: o.Json = False) -> None:
    """Re-sign the CRL (certs/crl.pem) with a fresh validity; run it before it expires."""
    from fleet import pki

    a = app_of(ctx)
    with a.guarded():
        ca = pki.load_ca(a.project, passphrase(a))
        written = ca.write_crl()
        broker = _restart_lab_broker(a)
    next_update = written.next_update_utc.isoformat() if written.next_update_utc else None
    if json:
        a.output_json({"crl": str(ca.paths.crl), "next_update": next_update,
                       "lab_broker_restarted": broker})
        return
    a.display_success(f"CRL {ca.paths.crl} re-signed; valid until {next_update}")


def _revoke_lab_identity(a: CliContext, device: str) -> list[str]:
    """The lab broker's CA may have given the device a second identity: revoke it too."""
    from fleet.lab.mqtt import LabMqtt

    return LabMqtt(a.project).revoke_identity(device)


def _restart_lab_broker(a: CliContext) -> bool:
    """The lab's mosquitto reads the CRL when it starts: restart it (clients reconnect; a
    revoked certificate is refused from now on). False when no lab broker runs."""
    from fleet.lab.mqtt import LabMqtt

    broker = LabMqtt(a.project).broker
    if not broker.running():
        return False
    broker.restart()
    a.display_info("lab broker restarted with the new CRL; devices reconnect")
    return True
