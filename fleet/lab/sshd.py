"""asyncssh-based SSH server for lab devices when OpenSSH's sshd is not installed.

Behaves like the sshd the lab configures: public-key auth against one
authorized_keys file, commands run through ``/bin/sh -c`` with the device's
environment (FLEET_ROOT, PATH), SFTP for uploads. Listens on loopback, or on a lab site's namespace address.

A box in the field (``Lab.add_field_device``, ``--root``) also takes its admin's password
(scrypt hash in ``<root>/.lab/password``) until a drop-in under
``<root>/etc/ssh/sshd_config.d/`` says ``PasswordAuthentication no``, as OpenSSH would read it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import sys
from pathlib import Path

import asyncssh


class _Server(asyncssh.SSHServer):
    root: Path | None = None  # a field box's root: its password and sshd drop-ins

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return self.root is not None and password_login(self.root)

    def validate_password(self, username: str, password: str) -> bool:
        return self.root is not None and password_login(self.root) and \
            check_password(self.root / ".lab/password", password)


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"{salt.hex()}:{digest.hex()}"


def check_password(path: Path, password: str) -> bool:
    try:
        salt, _ = path.read_text().strip().split(":")
        return hmac.compare_digest(hash_password(password, bytes.fromhex(salt)),
                                   path.read_text().strip())
    except (OSError, ValueError):
        return False


def password_login(root: Path) -> bool:
    """Password login is on while the box has a password and no drop-in turned it off."""
    if not (root / ".lab/password").exists():
        return False
    for conf in sorted((root / "etc/ssh/sshd_config.d").glob("*.conf")):
        for line in conf.read_text().splitlines():
            words = line.split()
            if len(words) == 2 and words[0].lower() == "passwordauthentication":
                return words[1].lower() == "yes"  # sshd: the first value found wins
    return True


async def _run_command(process: asyncssh.SSHServerProcess) -> None:  # type: ignore[type-arg]
    command = process.command or "true"
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", command, env=dict(os.environ),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await process.redirect(stdin=proc.stdin, stdout=proc.stdout, stderr=proc.stderr)
    process.exit(await proc.wait())


async def serve(host: str, port: int, host_key: str, authorized_keys: str,
                root: str | None = None) -> None:
    _Server.root = Path(root) if root else None
    keys = Path(authorized_keys)
    # A field box has no authorized key before bootstrap (asyncssh refuses an empty file).
    client_keys = authorized_keys if keys.exists() and keys.read_text().strip() else None
    await asyncssh.listen(
        host, port, server_host_keys=[host_key], authorized_client_keys=client_keys,
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
    parser.add_argument("--root", help="a field box's device root (password login)")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.host, args.port, args.host_key, args.authorized_keys, args.root))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
