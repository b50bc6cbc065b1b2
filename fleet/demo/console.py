"""Demo step: `fleet serve` for an operator; its JSON API answers what the CLI does."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from fleet.demo import Demo
from fleet.errors import FleetError

DEMO_PASSWORD = "edgefleet-demo-console"  # noqa: S105 - the demo's own user, stated in the demo


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - our own http URL
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - our own http URL
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), b""


def step_console(demo: Demo) -> None:
    demo.say("The web console is served by the project itself, on 127.0.0.1 only, for users with"
             " a role; scripts use the same JSON as the CLI with a per-user API token.")
    base = [sys.executable, "-m", "fleet.cli.main", "--project", str(demo.project)]
    demo.say("[bold cyan]$ echo ... | fleet serve user add demo-ops --role operator --json[/bold cyan]")
    added = subprocess.run([*base, "serve", "user", "add", "demo-ops", "--role", "operator",
                            "--json"], input=DEMO_PASSWORD + "\n", text=True,
                           capture_output=True, check=False)
    if added.returncode != 0:
        raise FleetError(f"demo: fleet serve user add failed: {added.stderr.strip()}")
    token = json.loads(added.stdout)["api_token"]
    port = _free_port()
    demo.say(f"[bold cyan]$ fleet serve --port {port} &[/bold cyan]")
    server = subprocess.Popen([*base, "serve", "--port", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        status, body = 0, b""
        while time.monotonic() < deadline and server.poll() is None:
            try:
                status, body = _get(f"{url}/api/devices", token)
                break
            except OSError:
                time.sleep(0.2)  # not listening yet
        if status != 200:
            raise FleetError(f"demo: the console did not answer /api/devices (status {status})")
        devices = json.loads(body)["devices"]
        anonymous, _ = _get(f"{url}/api/devices")
        demo.say(f"GET /api/devices with the token: {len(devices)} devices, the same records as "
                 f"`fleet devices list --json`; without it: {anonymous}")
        demo.say(f"Open {url}/ in a browser while `fleet serve` runs: sites, devices, camera "
                 "snapshots and live rollouts (docs/console.md).")
    finally:
        server.terminate()
        server.wait(timeout=30)
