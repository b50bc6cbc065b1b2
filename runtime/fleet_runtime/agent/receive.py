"""`fleet-agent receive PATH --offset N`: stdin into ``PATH.part``, hashed as it arrives.

The controller's bulk upload (``SSHSession.put`` with a receiver): the bytes are
written and hashed in one pass, so verifying the upload costs no second read
of the file. A resumed upload (``--offset`` > 0) keeps the first N bytes of the
partial file and hashes them once. The answer is the SHA-256 and size of the
whole ``.part``; the controller compares it with its own and the file is renamed
into place only when they agree: here, when the controller sent its hash with
``--expect`` (one round trip less), else by the controller. Only the upload
directory is accepted.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

from fleet_runtime.agent.protocol import AgentError
from fleet_runtime.layout import Layout

BLOCK = 1 << 20
LOCK_WAIT_S = 60.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("receive", help="stdin into PATH.part in the upload dir, with its SHA-256")
    p.add_argument("path", help="final path in the upload directory (bytes go to PATH.part)")
    p.add_argument("--offset", type=int, default=0,
                   help="bytes of PATH.part already received; the stream continues from there")
    p.add_argument("--expect", metavar="SHA256",
                   help="the sender's SHA-256 of the whole file: when the .part's matches, it "
                   "is renamed to PATH (\"placed\": true); when not, it stays for the sender")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    # The upload dir is slots.incoming_dir(layout), i.e. layout.staging; fleet_runtime.slots
    # is not imported for it: it brings the bundle reader and cryptography, a third of
    # this command's start-up.
    incoming = layout.staging
    part = Path(args.path + ".part")
    if part.resolve().parent != incoming.resolve():
        raise AgentError("usage", f"{args.path} is not in the upload dir {incoming}")
    if args.offset < 0:
        raise AgentError("usage", "--offset must be 0 or more")
    digest = hashlib.sha256()
    fd = _open_locked(part)
    try:
        kept = _keep_prefix(fd, part, args.offset, digest)
        os.lseek(fd, kept, os.SEEK_SET)
        size = kept + _copy(sys.stdin.fileno(), fd, digest)
        os.ftruncate(fd, size)
        # No fsync, as for the SFTP upload: what a power cut loses from the page cache
        # fails the hash on the next resume (which then restarts), and the install
        # verifies the bundle's signature and every file's hash as it reads.
        sha256 = digest.hexdigest()
        placed = args.expect is not None and sha256 == args.expect.lower()
        if placed:
            from fleet_runtime import durable

            # under the lock: no resume writes into it meanwhile
            durable.replace(part, Path(args.path))
    finally:
        os.close(fd)
    return {"path": str(part), "size": size, "sha256": sha256, "placed": placed}


def _open_locked(part: Path) -> int:
    """`part`, open for writing and locked: one receiver per upload file. A resume can
    start while the receiver of the stream that was cut still writes its last bytes; both
    writing (and one truncating) would leave a hole the hashes here do not see, so the new
    one waits for the old (bounded)."""
    from fleet_runtime import durable

    try:
        return durable.acquire_lock(part, timeout=LOCK_WAIT_S, mode=0o600)
    except durable.LockTimeout:
        raise AgentError("busy", f"another upload into {part} is still running; "
                         "run the command again later") from None


def _keep_prefix(fd: int, part: Path, offset: int, digest: Any) -> int:
    """Hash the first `offset` bytes already in `part`; fewer if it is shorter."""
    kept = min(offset, os.fstat(fd).st_size)
    with open(part, "rb") as fh:
        left = kept
        while left:
            block = fh.read(min(left, BLOCK))
            if not block:
                break
            digest.update(block)
            left -= len(block)
    return kept - left


def _copy(src: int, dst: int, digest: Any) -> int:
    with contextlib.suppress(OSError):  # a 1 MiB pipe from sshd (Linux): fewer wake-ups
        fcntl.fcntl(src, 1031, BLOCK)  # F_SETPIPE_SZ
    done = 0
    while block := os.read(src, BLOCK):
        digest.update(block)
        view = memoryview(block)
        while view:
            view = view[os.write(dst, view):]
        done += len(block)
    return done
