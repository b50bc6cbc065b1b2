"""`fleet-agent logs export`: a redacted tar.gz of the device's logs with a manifest.

    fleet-agent logs export [--since 24h] [--max-bytes N] [--stdout] > bundle.tar.gz
    fleet-agent logs export [--since 24h] [--max-bytes N] --usb /media/usb

The bundle holds the agent, runtime, application and provisioning logs
(``var/log/fleet/``), the system logs (``var/log/syslog``, ``kern.log``, and
the journal on a real device), each redacted (camera passwords, private keys,
tokens, URL passwords) before it is written, and ``<top>/manifest.json`` last:
device, time range, and every file's size and SHA-256. ``--max-bytes`` caps the
uncompressed content: newest logs are kept, older ones are cut (``truncated``).

``--stdout`` (the default; refused when stdout is a terminal) is the
controller's streaming form and the one exception to the one-JSON-object
rule: stdout carries the gzip bytes and the protocol object (ok/error, bundle
SHA-256, manifest) is the last line on **stderr**. A failure before the first
byte is still the usual JSON object on stdout.
``--usb PATH`` writes ``PATH/edgefleet-logs/<device>-<time>.tar.gz`` for an
operator to carry out of an offline site; plain tar.gz, readable anywhere.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fleet_runtime import labhooks, logs, slot_state
from fleet_runtime.agent.info import identity
from fleet_runtime.agent.protocol import AgentError
from fleet_runtime.durable import atomic_file
from fleet_runtime.layout import Layout

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# The export's time on a device is mostly its compression. On the bench's 20 MB of
# logs (bench/logs_export.py), in CPU: zlib level 4 0.13 s for 5.6x (level 6: 0.35 s
# for 6.1x, level 2: 0.10 s for 5.0x); ISA-L's deflate (the `isal` wheel) at level 2
# 0.025 s for 5.2x, the same gzip format. So ISA-L when it is installed, zlib level 4
# otherwise (#19.5).
COMPRESS_LEVEL = 4
ISAL_LEVEL = 2
SYSTEM_LOGS = ("syslog", "kern.log", "messages", "auth.log")
USB_DIR = "edgefleet-logs"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("logs", help="device logs")
    verbs = p.add_subparsers(dest="verb", required=True, parser_class=type(p))
    e = verbs.add_parser("export", help="redacted tar.gz of the logs with a manifest")
    e.add_argument("--since", help="only logs newer than this: 24h, 30m, 7d or an ISO time")
    e.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                   help="cap on the uncompressed logs in the bundle (newest kept)")
    where = e.add_mutually_exclusive_group()
    where.add_argument("--stdout", action="store_true",
                       help="stream the bundle on stdout (the default without --usb)")
    where.add_argument("--usb", metavar="PATH", help="write the bundle under PATH (a USB drive)")
    e.set_defaults(handler=run_export)


@dataclass
class Source:
    """One log to export: a file on the device, or a command's output (the journal)."""

    name: str  # path inside the bundle, relative to the device root
    path: Path | None = None
    argv: list[str] = field(default_factory=list)
    mtime: float = 0.0


@dataclass
class Piece:
    source: Source
    data: bytes
    truncated: bool
    start: float | None
    end: float | None


def file_sources(layout: Layout, since: float | None) -> list[Source]:
    """Log files of the agent, runtime, apps, provisioning and system, newest first."""
    candidates = [p for p in layout.logs.rglob("*") if p.is_file()] if layout.logs.is_dir() else []
    system = layout.root / "var/log"
    for name in SYSTEM_LOGS:
        candidates.extend(p for p in system.glob(f"{name}*") if p.is_file())
    found = []
    for path in candidates:
        mtime = path.stat().st_mtime
        if since is None or mtime >= since:
            found.append(Source(str(path.relative_to(layout.root)), path=path, mtime=mtime))
    return sorted(found, key=lambda s: s.mtime, reverse=True)


def journal_source(layout: Layout, since: float | None) -> list[Source]:
    """The systemd journal, on a real device only (a lab device shares the host's)."""
    if labhooks.is_simulated(layout) or not shutil.which("journalctl"):
        return []
    argv = ["journalctl", "--no-pager", "-o", "short-iso", "-q"]
    if since is not None:
        argv.append(f"--since=@{int(since)}")
    return [Source("journal/system.log", argv=argv, mtime=time.time())]


def read_tail(source: Source, budget: int) -> tuple[bytes, bool]:
    """Up to `budget` bytes of the source, the newest end, cut at a line start."""
    if source.path is not None:
        with source.path.open("rb") as fh:
            size = fh.seek(0, io.SEEK_END)
            fh.seek(max(0, size - budget))
            data, truncated = fh.read(budget), size > budget
    else:
        proc = subprocess.run(source.argv, capture_output=True, timeout=60, check=False)
        data, truncated = proc.stdout[-budget:], len(proc.stdout) > budget
    if truncated and b"\n" in data:
        data = data[data.index(b"\n") + 1:]
    return data, truncated


def line_start(data: bytes, offset: int) -> int:
    if offset <= 0 or data[offset - 1:offset] == b"\n":
        return max(0, offset)
    nl = data.find(b"\n", offset)
    return len(data) if nl < 0 else nl + 1


def first_time(data: bytes, offset: int) -> float | None:
    """Time of the first timestamped line at or after `offset` (looks a few lines ahead)."""
    for _ in range(8):
        if offset >= len(data):
            return None
        stamp = logs.line_time(data[offset:offset + 40])
        if stamp is not None:
            return stamp
        offset = line_start(data, offset + 1)
    return None


def cut_before(data: bytes, since: float) -> bytes:
    """Drop the lines older than `since`, by bisection (log lines are in time order)."""
    lo, hi = 0, len(data)
    while lo < hi:
        mid = (lo + hi) // 2
        start = line_start(data, mid)
        stamp = first_time(data, start)
        if start >= len(data) or (stamp is not None and stamp >= since):
            hi = mid
        else:
            lo = mid + 1
    return data[line_start(data, lo):]


def last_time(data: bytes) -> float | None:
    end = len(data)
    for _ in range(8):
        start = data.rfind(b"\n", 0, max(0, end - 1)) + 1
        stamp = logs.line_time(data[start:start + 40])
        if stamp is not None or start == 0:
            return stamp
        end = start
    return None


def take(sources: list[Source], since: float | None, max_bytes: int) -> list[Piece]:
    """Read newest first until the byte budget is spent; older logs are cut or left out."""
    pieces, budget = [], max_bytes
    for source in sources:
        if budget <= 0:
            pieces.append(Piece(source, b"", True, None, None))
            continue
        data, truncated = read_tail(source, budget)
        if since is not None:
            data = cut_before(data, since)
        if not data and not truncated:
            continue
        budget -= len(data)
        start = first_time(data, 0)
        end = last_time(data) or (source.mtime if data else None)
        pieces.append(Piece(source, data, truncated, start or (end if data else None), end))
    return pieces


class _Counting(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to `sink`."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink, self.sha, self.count = sink, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = bytes(data)
        self.sink.write(view)
        self.sha.update(view)
        self.count += len(view)
        return len(view)


def deflater() -> Any:
    """A deflate stream in gzip's wrapping (wbits 31: header, CRC-32, length).

    ISA-L's when the `isal` wheel is installed (five times faster than zlib at
    a ratio between zlib's levels 2 and 3), zlib's otherwise. Both write plain
    gzip, so a bundle reads the same anywhere.
    """
    try:
        from isal import isal_zlib
    except ImportError:
        return zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, 31)
    return isal_zlib.compressobj(ISAL_LEVEL, isal_zlib.DEFLATED, 31)


class _GzipWriter(io.RawIOBase):
    """Compresses what the tar writer gives it into `sink`; `finish` writes the trailer."""

    def __init__(self, sink: IO[bytes] | _Counting) -> None:
        self.sink, self.deflate = sink, deflater()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        out = self.deflate.compress(data)
        if out:
            self.sink.write(out)
        return len(data)

    def finish(self) -> None:
        self.sink.write(self.deflate.flush())


def bundle_top(device: dict[str, Any], created: float) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(created))
    return f"{device.get('name', 'device')}-{stamp}"


def _member(name: str, data: bytes, mtime: float) -> tuple[tarfile.TarInfo, IO[bytes]]:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(mtime), 0o644
    info.uname = info.gname = "root"
    return info, io.BytesIO(data)


def write_bundle(
    sink: _Counting, layout: Layout, pieces: list[Piece], meta: dict[str, Any]
) -> dict[str, Any]:
    """Redact every piece and write the tar.gz to `sink`; return the manifest written."""
    redactor = logs.redactor_for(layout)
    top, files = meta["top"], []
    gz = _GzipWriter(sink)
    with tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for piece in sorted(pieces, key=lambda p: p.source.name):
            clean = redactor.redact(piece.data)
            tar.addfile(*_member(f"{top}/{piece.source.name}", clean, piece.source.mtime))
            files.append(_file_entry(piece, clean))
        manifest = {**meta, "files": files, **_ranges(pieces)}
        body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        tar.addfile(*_member(f"{top}/{logs.MANIFEST_NAME}", body, meta["created"]))
    gz.finish()
    return manifest


def _file_entry(piece: Piece, clean: bytes) -> dict[str, Any]:
    return {
        "path": piece.source.name,
        "size": len(clean),
        "sha256": hashlib.sha256(clean).hexdigest(),
        "start": logs.iso(piece.start),
        "end": logs.iso(piece.end),
        "truncated": piece.truncated,
    }


def _ranges(pieces: list[Piece]) -> dict[str, Any]:
    starts = [p.start for p in pieces if p.start is not None]
    ends = [p.end for p in pieces if p.end is not None]
    return {
        "time_range": {
            "start": logs.iso(min(starts)) if starts else None,
            "end": logs.iso(max(ends)) if ends else None,
        },
        "truncated": any(p.truncated for p in pieces),
        "bytes": sum(len(p.data) for p in pieces),
    }


def bundle_meta(layout: Layout, since: float | None, max_bytes: int) -> dict[str, Any]:
    device = identity(layout)
    created = time.time()
    return {
        "format": logs.BUNDLE_FORMAT,
        "top": bundle_top(device, created),
        "device": device.get("name"),
        "site": device.get("site"),
        "serial": device.get("serial"),
        "software": slot_state.software_version(layout),
        "created": created,
        "created_iso": logs.iso(created),
        "since": logs.iso(since),
        "max_bytes": max_bytes,
        "redacted": True,
    }


def _since(args: argparse.Namespace) -> float | None:
    if not args.since:
        return None
    try:
        return logs.parse_since(args.since)
    except ValueError as exc:
        raise AgentError("bad-since", str(exc)) from None


def collect(args: argparse.Namespace, layout: Layout) -> tuple[dict[str, Any], list[Piece]]:
    if args.max_bytes < 1024:
        raise AgentError("bad-max-bytes", f"--max-bytes {args.max_bytes} is below 1024")
    since = _since(args)
    meta = bundle_meta(layout, since, args.max_bytes)
    sources = file_sources(layout, since) + journal_source(layout, since)
    return meta, take(sources, since, args.max_bytes)


def export_stdout(layout: Layout, meta: dict[str, Any], pieces: list[Piece]) -> dict[str, Any]:
    raw = sys.stdout.buffer
    # From the first byte on, stdout is the bundle: the protocol object goes to stderr.
    sys.stdout = sys.stderr
    counter = _Counting(raw)
    manifest = write_bundle(counter, layout, pieces, meta)
    raw.flush()
    return {"bundle": {"bytes": counter.count, "sha256": counter.sha.hexdigest()},
            "manifest": manifest}


def usb_target(usb: str) -> Path:
    root = Path(usb)
    if not root.is_dir():
        raise AgentError("usb-not-found",
                         f"{usb} is not a mounted directory; mount the drive first")
    if not os.access(root, os.W_OK):
        raise AgentError("usb-read-only", f"{usb} is not writable; remount it read-write")
    return root / USB_DIR


def export_usb(usb: str, layout: Layout, meta: dict[str, Any],
               pieces: list[Piece]) -> dict[str, Any]:
    folder = usb_target(usb)
    folder.mkdir(exist_ok=True)
    final = folder / f"{meta['top']}.tar.gz"
    try:
        with atomic_file(final, 0o666, chmod=False, suffix=".part") as fh:
            counter = _Counting(fh)
            manifest = write_bundle(counter, layout, pieces, meta)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise AgentError("usb-full",
                             f"{usb} is full; use a larger drive or --max-bytes") from None
        raise
    bundle = {"bytes": counter.count, "sha256": counter.sha.hexdigest()}
    return {"path": str(final), "bundle": bundle, "manifest": manifest}


def run_export(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    if not args.usb and sys.stdout.isatty():
        raise AgentError("stdout-is-a-terminal", "refusing to write a binary bundle to a "
                         "terminal; use --usb PATH, or redirect: > logs.tar.gz")
    meta, pieces = collect(args, layout)
    log = logs.device_logger(layout, "agent")
    if args.usb:
        result = export_usb(args.usb, layout, meta, pieces)
    else:
        result = export_stdout(layout, meta, pieces)
    log.info("logs export: %d files, %d bytes raw, %d bytes bundle, to %s",
             len(pieces), result["manifest"]["bytes"], result["bundle"]["bytes"],
             args.usb or "stdout")
    return result
