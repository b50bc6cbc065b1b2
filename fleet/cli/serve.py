"""`fleet serve`: the web console (docs/console.md), and `fleet serve user add|list|remove`."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from fleet.cli import options as o
from fleet.cli.context import CliContext, app_of

app = typer.Typer(
    help="Serve the web console: sites, devices, cameras and live rollouts, with actions for "
         "operators. Listens on 127.0.0.1:8420 unless told otherwise.",
    invoke_without_command=True)
user_app = typer.Typer(help="Console users: viewers look, operators also act on rollouts.",
                       no_args_is_help=True)
app.add_typer(user_app, name="user")

Host = Annotated[str, typer.Option("--host", help="address to listen on (non-loopback needs TLS)")]
Port = Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port")]
Cert = Annotated[Optional[Path], typer.Option("--tls-cert", help="PEM certificate: serve HTTPS")]
Key = Annotated[Optional[Path], typer.Option("--tls-key", help="PEM private key of --tls-cert")]
Insecure = Annotated[bool, typer.Option(
    "--insecure", help="allow a non-loopback address without TLS (a network you trust)")]
HealthEvery = Annotated[float, typer.Option(
    "--health-every", min=0, metavar="SECONDS", help="health sweep interval; 0: none")]
HealthSource = Annotated[str, typer.Option(
    "--health-source", help="ssh: ask the devices; mqtt: their latest heartbeats")]
Role = Annotated[str, typer.Option("--role", help="viewer or operator")]


@app.callback()
def serve(ctx: typer.Context, host: Host = "127.0.0.1", port: Port = 8420,
          tls_cert: Cert = None, tls_key: Key = None, insecure: Insecure = False,
          health_every: HealthEvery = 60.0, health_source: HealthSource = "ssh") -> None:
    """Serve the console until Ctrl-C (exit 2: refused before listening)."""
    if ctx.invoked_subcommand is not None:
        return
    from fleet.console.security import check_listen, is_loopback
    from fleet.console.users import list_users

    a = app_of(ctx)
    if (tls_cert is None) != (tls_key is None):
        a.abort("give --tls-cert and --tls-key together", 2)
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            a.abort(f"{path}: no such file (--tls-cert/--tls-key)", 2)
    if tls_cert is not None and tls_key is not None:
        _check_tls(a, tls_cert, tls_key)
    if health_source not in ("ssh", "mqtt"):
        a.abort(f"unknown --health-source '{health_source}'; use ssh or mqtt", 2)
    with a.guarded():
        check_listen(host, tls_cert is not None, insecure)
        if not list_users(a.project):
            a.abort("no console users yet: add one with "
                    "`fleet serve user add NAME --role operator`", 2)
    if insecure and tls_cert is None and not is_loopback(host):
        a.display_warning(f"serving on {host} without TLS (--insecure): passwords and session "
                          "cookies cross the network in clear")
    _run(a, host, port, tls_cert, tls_key, health_every, health_source,
         loopback=is_loopback(host))


def _run(a: CliContext, host: str, port: int, cert: Path | None, key: Path | None,
         health_every: float, health_source: str, *, loopback: bool) -> None:
    import uvicorn

    from fleet.console.app import create_app
    from fleet.console.state import Settings

    settings = Settings(secure=cert is not None, loopback_only=loopback, host=host,
                        health_every=health_every, health_source=health_source)
    scheme = "https" if cert else "http"
    shown = f"[{host}]" if ":" in host else host
    try:
        sock = _listen(host, port)
    except OSError as exc:
        a.abort(f"cannot listen on {shown}:{port}: {exc.strerror or exc} (is another "
                "fleet serve running there? choose another --port)", 1)
    a.display_info(f"fleet console on {scheme}://{shown}:{port}/ (Ctrl-C stops it)")
    config = uvicorn.Config(create_app(a.project, settings), log_level="warning",
                            access_log=False, ssl_certfile=str(cert) if cert else None,
                            ssl_keyfile=str(key) if key else None, timeout_graceful_shutdown=2,
                            server_header=False)
    uvicorn.Server(config).run(sockets=[sock])


def _check_tls(a: CliContext, cert: Path, key: Path) -> None:
    """Load the pair once here: a file that is not PEM, or a key of another certificate,
    is one line and exit 2 before anything listens (uvicorn would raise a traceback)."""
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        a.abort(f"{cert}, {key}: not a usable certificate and key ({exc.strerror or exc}); "
                "give the PEM certificate and its own private key", 2)


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here rather than by uvicorn so that a busy port is one
    clear line and exit 1, not uvicorn's log line after "fleet console on ..."."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _read_password(a: CliContext, name: str) -> str:
    """Prompted twice on a terminal; else the first line of standard input (for scripts)."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    first = getpass.getpass(f"password for {name}: ")
    if getpass.getpass("again: ") != first:
        a.abort("the passwords differ; nothing changed", 2)
    return first


@user_app.command("add")
def user_add(ctx: typer.Context, name: str, role: Role = "viewer", json: o.Json = False) -> None:
    """Create (or replace) a console user. The password is prompted, or read from standard
    input when that is not a terminal; never an argument. Prints the user's new API token
    once, on stdout (for `Authorization: Bearer`); it is stored only as a hash."""
    from fleet.console import users

    a = app_of(ctx)
    with a.guarded():
        users.check_name(name)
        token = users.add_user(a.project, name, role, _read_password(a, name))
    if json:
        a.output_json({"user": name, "role": role, "api_token": token})
        return
    a.display_success(f"console user {name} ({role}) saved; API token below, shown only now")
    typer.echo(token)


@user_app.command("list")
def user_list(ctx: typer.Context, json: o.Json = False) -> None:
    """Console users and their roles."""
    from fleet.console.users import list_users

    a = app_of(ctx)
    with a.guarded():
        found = list_users(a.project)
    if json:
        a.output_json({"users": [{"name": u.name, "role": u.role} for u in found]})
        return
    for user in found:
        typer.echo(f"{user.name}\t{user.role}")


@user_app.command("remove")
def user_remove(ctx: typer.Context, name: str) -> None:
    """Remove a console user (their sessions and API token stop working at once)."""
    from fleet.console.users import remove_user

    a = app_of(ctx)
    with a.guarded():
        remove_user(a.project, name)
    a.display_success(f"console user {name} removed")
