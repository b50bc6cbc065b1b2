"""asyncssh-based SSH server for lab devices when OpenSSH's sshd is not installed.

Behaves like the sshd the lab configures: public-key auth against one
authorized_keys file, commands run through ``/bin/sh -c`` with the device's
environment (FLEET_ROOT, PATH), SFTP for uploads. Listens on loopback, or on a lab site's namespace address.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import asyncssh


class _Server(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False


async def _run_command(process: asyncssh.SSHServerProcess) -> None:  # type: ignore[type-arg]
    command = process.command or "true"
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", command, env=dict(os.environ),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await process.redirect(stdin=proc.stdin, stdout=proc.stdout, stderr=proc.stderr)
    process.exit(await proc.wait())


async def serve(host: str, port: int, host_key: str, authorized_keys: str) -> None:
    await asyncssh.listen(
        host, port, server_host_keys=[host_key], authorized_client_keys=authorized_keys,
        server_factory=_Server, process_factory=_run_command, encoding=None,
        sftp_factory=True, allow_scp=True,
    )
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fleet.lab.sshd")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host-key", required=True)
    parser.add_argument("--authorized-keys", required=True)
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.host, args.port, args.host_key, args.authorized_keys))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
