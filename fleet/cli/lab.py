"""fleet lab: simulated devices on this machine, with fault injection."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from fleet.cli import options as o
from fleet.cli.context import app_of

if TYPE_CHECKING:
    from fleet.cli.context import CliContext

app = typer.Typer(help="A local lab fleet: simulated appliances behind real SSH servers.",
                  no_args_is_help=True)


@app.command()
def up(ctx: typer.Context,
       sites: Annotated[Optional[int], typer.Option(
           help="number of sites (default: 3 for a new lab, as it is for an existing one)")] = None,
       devices_per_site: Annotated[Optional[int], typer.Option(
           help="devices at each site (default: 3 for a new lab)")] = None,
       ssh: Annotated[str, typer.Option(help="openssh | asyncssh (default: openssh if installed)")] = "",
       factory: Annotated[bool, typer.Option(help="new devices are unprovisioned (need USB first boot)")] = False,
       mqtt: Annotated[bool, typer.Option(help="also run a mosquitto broker (mutual TLS) and each device's heartbeat daemon")] = False,
       heartbeat: Annotated[float, typer.Option(help="seconds between heartbeats with --mqtt")] = 10.0,
       link: Annotated[str, typer.Option(help="put each site behind its own shaped uplink of this rate, e.g. 10mbit (needs root, ip, tc)")] = "",
       json: o.Json = False) -> None:
    """Create (or restart) the lab: one SSH server per device, inventory in inventories/lab.

    With --link RATE each site gets its own network namespace joined to this one by a
    veth pair shaped to RATE each way (plus a netem delay where the kernel has it);
    `fleet lab down` removes them. Without --link the lab is on loopback."""
    from fleet.lab import Lab

    a = app_of(ctx)
    if ssh and ssh not in ("openssh", "asyncssh"):
        a.abort(f"unknown --ssh '{ssh}'; use openssh or asyncssh", 2)
    with a.guarded(), a.err.status("starting lab devices…"):
        lab = Lab(a.project)
        existing = set(lab.devices())
        lab.up(sites, devices_per_site, ssh=ssh or None, factory=factory, link=link or None)
        _say_created(a, sorted(set(lab.devices()) - existing), factory)
        if mqtt:
            from fleet.lab.mqtt import LabMqtt

            state = LabMqtt(a.project).up({n: lab.root(n) for n in lab.devices()}, heartbeat)
            a.display_info(f"mqtt: mosquitto (mutual TLS) on 127.0.0.1:{state.port}, "
                           f"heartbeats every {heartbeat:g}s")
    _show_status(a, json)


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop every lab SSH server (by PID). Device state stays on disk."""
    from fleet.lab import Lab
    from fleet.lab.mqtt import LabMqtt

    a = app_of(ctx)
    lab = Lab(a.project)
    LabMqtt(a.project).down({n: lab.root(n) for n in lab.devices()})
    stopped = lab.down()
    a.display_success(f"stopped {stopped} lab device(s)")


@app.command()
def status(ctx: typer.Context, json: o.Json = False) -> None:
    """Show lab devices: port, server, software, slot, faults."""
    _show_status(app_of(ctx), json)


@app.command()
def fault(ctx: typer.Context, device: str,
          kind: Annotated[str, typer.Argument(help="offline | online | slow | disk-full | fallback | no-reboot | clear")],
          seconds: Annotated[float, typer.Option(help="delay per command for `slow`")] = 3.0) -> None:
    """Inject a fault into a lab device (or clear it).

    `fallback` and `no-reboot` apply to the next reboot only: with `fallback` the device
    boots the new slot until its trials run out and falls back to the committed one by
    itself; with `no-reboot` the reboot does nothing."""
    from fleet.lab import Lab
    from fleet.lab.mqtt import LabMqtt

    a = app_of(ctx)
    with a.guarded():
        lab = Lab(a.project)
        lab.fault(device, kind, seconds=seconds)
        LabMqtt(a.project).follow_fault(device, lab.root(device), kind)
    a.display_success(f"{device}: {kind}")


@app.command()
def reboot(ctx: typer.Context, device: str) -> None:
    """Power-cycle a lab device: runs its boot logic and restarts its services."""
    from fleet.lab import Lab

    a = app_of(ctx)
    with a.guarded():
        Lab(a.project).reboot(device)
    a.display_success(f"{device}: rebooted")


@app.command()
def usb(ctx: typer.Context, device: str,
        path: Annotated[Path, typer.Argument(help="folder standing for the USB drive")],
        json: o.Json = False) -> None:
    """Insert a USB drive into a lab device and power it on: its first boot provisions it
    from the drive (`fleet-agent provision --usb`), then its SSH server starts."""
    from fleet.lab import Lab
    from fleet.lab.usb import lab_usb_boot

    a = app_of(ctx)
    with a.guarded():
        answer = lab_usb_boot(Lab(a.project), device, path)
    if json:
        a.output_json(answer)
        return
    a.display_success(f"{device}: provisioned from {path} (CA trust: {answer.get('trust')}); "
                      f"SSH up with the host key pinned from its archive")
    a.display_info(f"provisioning log on the drive: {answer.get('log')}")


@app.command()
def reset(ctx: typer.Context, device: str, json: o.Json = False) -> None:
    """Factory-reset a lab device: its identity and keys are wiped (`fleet-agent reset`);
    it stays off until a USB first boot (`fleet lab usb`) provisions it again."""
    from fleet.lab import Lab
    from fleet.lab.usb import lab_factory_reset

    a = app_of(ctx)
    with a.guarded():
        answer = lab_factory_reset(Lab(a.project), device)
    if json:
        a.output_json(answer)
        return
    removed = len(answer.get("removed", []))
    a.display_success(f"{device}: reset to factory state ({removed} files removed)")


def _say_created(a: CliContext, created: list[str], factory: bool) -> None:
    """--factory shapes only the devices this call creates; say so when it created none."""
    if created:
        how = " (factory-fresh: provision them by USB with `fleet lab usb`)" if factory else ""
        a.display_info(f"created {len(created)} device(s): {', '.join(created)}{how}")
    elif factory:
        a.display_warning("--factory changed nothing: it applies only to devices `lab up` creates, "
                          "and every device exists already; add a site (--sites N+1) or reset a device "
                          "to factory state with `fleet lab reset DEVICE`")


def _show_status(a: CliContext, json: bool) -> None:
    from fleet.cli.render import grouped_table
    from fleet.lab import Lab
    from fleet.lab.net import LabNet, link_summary

    lab = Lab(a.project)
    rows = lab.status()
    link = link_summary(LabNet(lab.dir).state())
    if json:
        a.output_json({"devices": rows, "link": link})
        return
    if link:
        a.display_info(f"link: {link['describe']}")
    table_rows = [{**r, "device": r["name"], "server": f"{r['ssh']}:{_addr(r)}" if r["running"] else "down",
                   "faults": ",".join(r["faults"]) or "-",
                   "state": "ready" if r["provisioned"] else "factory"} for r in rows]
    a.output(grouped_table(f"lab: {len(rows)} devices", ["Site", "Device", "Server", "State",
                                                         "Software", "Slot", "Faults"], table_rows))


def _addr(row: dict[str, object]) -> str:
    return str(row["port"]) if row["host"] == "127.0.0.1" else f"{row['host']}:{row['port']}"
