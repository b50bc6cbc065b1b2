"""Log export: a verified, redacted bundle from every selected device, in parallel.

Each device streams ``fleet-agent logs export --stdout`` (redacted on the
device, capped at ``max_bytes`` of logs, newest kept) over its SSH
connection; we check the stream's SHA-256 against the agent's answer, verify
every file against the manifest, and only then rename the bundle into
``OUT/<site>/<device>-<time>.tar.gz``. Devices that cannot be reached become
failed Results the CLI lists. ``--s3`` uploads each verified bundle to
``s3://bucket/prefix/<site>/<file>`` (boto3; ``AWS_ENDPOINT_URL`` points it at
moto's server in tests or any S3-compatible store).

>>> results = export(project, nr, ExportOptions(out=Path("logs")))   # doctest: +SKIP
>>> [r.path.name for r in results if r.ok]                          # doctest: +SKIP
['berlin-01-20261122T020000Z.tar.gz']
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet_runtime import logs as device_logs
from fleet_runtime.durable import atomic_file
from nornir.core import Nornir
from nornir.core.task import Result, Task

from fleet.agent import agent_for, parse_answer
from fleet.errors import AgentCallError, DeviceError, FleetError, UsageError

GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(i?[bB])?\s*")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """``20MB``, ``512k``, ``1G`` or a byte count.

    >>> parse_size("20MB")
    20971520
    """
    match = _SIZE.fullmatch(text)
    if not match:
        raise UsageError(f"size {text!r} is not a size", fix="use a byte count or 512k, 20MB, 1G")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@dataclass(frozen=True)
class ExportOptions:
    out: Path
    since: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    s3: str | None = None
    stamp: str = field(default_factory=lambda: time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))

    def check(self) -> None:
        """Refuse bad input before any device is touched."""
        if self.since:
            try:
                device_logs.parse_since(self.since)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        if self.max_bytes < 1024:
            raise UsageError(f"--max-bytes {self.max_bytes} is below 1 KiB")
        if self.s3:
            s3_location(self.s3)


@dataclass
class Bundle:
    """One device's outcome: a verified bundle, or why there is none."""

    device: str
    site: str
    path: Path | None = None
    bytes: int = 0
    log_bytes: int = 0
    files: int = 0
    truncated: bool = False
    time_range: dict[str, Any] = field(default_factory=dict)
    s3_uri: str | None = None
    error: str | None = None
    unreachable: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_json(self) -> dict[str, Any]:
        return {"device": self.device, "site": self.site, "ok": self.ok,
                "path": str(self.path) if self.path else None, "bytes": self.bytes,
                "log_bytes": self.log_bytes, "files": self.files, "truncated": self.truncated,
                "time_range": self.time_range, "s3_uri": self.s3_uri, "error": self.error,
                "unreachable": self.unreachable}


def s3_location(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix)."""
    match = re.fullmatch(r"s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(.*))?", uri)
    if not match:
        raise UsageError(f"--s3 {uri!r} is not an S3 location", fix="use s3://bucket/prefix")
    return match.group(1), (match.group(2) or "").strip("/")


def agent_argv(path: str, options: ExportOptions) -> list[str]:
    argv = [path, "logs", "export", "--stdout", "--max-bytes", str(options.max_bytes)]
    return argv + (["--since", options.since] if options.since else [])


def split_stream(device: str, stdout: bytes, stderr: bytes,
                 rc: int) -> tuple[bytes, dict[str, Any]]:
    """The bundle bytes and the agent's answer (stderr's last line once streaming began)."""
    if stdout.startswith(GZIP_MAGIC):
        answer = parse_answer(device, stderr, b"", rc)
    else:
        answer = parse_answer(device, stdout, stderr, rc)
        stdout = b""
    if not answer["ok"]:
        err = answer.get("error") or {}
        raise AgentCallError(device, str(err.get("code", "error")), str(err.get("message", "")))
    return stdout, answer


def check_stream(device: str, data: bytes, answer: dict[str, Any], cap: int) -> None:
    expected = answer.get("bundle") or {}
    if hashlib.sha256(data).hexdigest() != expected.get("sha256"):
        raise DeviceError(f"{device}: log bundle arrived damaged ({len(data)} bytes, "
                          f"agent sent {expected.get('bytes')})", fix="run the export again")
    # gzip never grows text much; a bundle far over the cap is not ours to keep.
    if len(data) > cap + cap // 10 + 65536:
        raise DeviceError(f"{device}: log bundle of {len(data)} bytes exceeds the cap of {cap}")


def store(device: str, site: str, data: bytes,
          options: ExportOptions) -> tuple[Path, dict[str, Any]]:
    """Write a `.part`, verify it against the manifest, rename it into place."""
    final = options.out / site / f"{device}-{options.stamp}.tar.gz"
    with atomic_file(final, 0o644, suffix=".part") as fh:
        fh.write(data)
        fh.flush()
        manifest = _verified(device, Path(fh.name))
    return final, manifest


def _verified(device: str, part: Path) -> dict[str, Any]:
    """The bundle's manifest; DeviceError (and the part is dropped) when it is not right."""
    try:
        manifest = device_logs.verify_bundle(part)
    except device_logs.BundleError as exc:
        raise DeviceError(f"{device}: {exc}", fix="run the export again") from None
    if manifest.get("device") != device:
        raise DeviceError(f"{device}: bundle says it is from {manifest.get('device')!r}",
                          fix="check the inventory maps this name to the right device")
    return manifest


def upload(client: Any, path: Path, site: str, s3: str) -> str:
    bucket, prefix = s3_location(s3)
    key = "/".join(p for p in (prefix, site, path.name) if p)
    client.upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{key}"


def export_task(task: Task, options: ExportOptions, s3_client: Any = None) -> Result:
    """Nornir task: stream, verify and store one device's bundle (and upload it)."""
    name, site = task.host.name, str(task.host.get("site", "unknown"))
    agent = agent_for(task)
    res = agent.session.exec(agent_argv(agent.path, options))
    data, answer = split_stream(name, res.stdout, res.stderr, res.rc)
    check_stream(name, data, answer, options.max_bytes)
    path, manifest = store(name, site, data, options)
    bundle = Bundle(name, site, path, len(data), int(manifest.get("bytes", 0)),
                    len(manifest.get("files", [])), bool(manifest.get("truncated")),
                    dict(manifest.get("time_range") or {}))
    if options.s3:
        bundle.s3_uri = upload(s3_client, path, site, options.s3)
    return Result(host=task.host, result=bundle)


def s3_client() -> Any:
    import boto3

    return boto3.client("s3")


def export(nr: Nornir, options: ExportOptions, *,
           processors: list[Any] | None = None) -> list[Bundle]:
    """Export from every host of `nr` in parallel; one Bundle per host, sorted by site."""
    options.check()
    options.out.mkdir(parents=True, exist_ok=True)
    client = s3_client() if options.s3 else None
    runner = nr.with_processors(processors) if processors else nr
    results = runner.run(task=export_task, options=options, s3_client=client, on_failed=True)
    bundles = [to_bundle(nr, name, multi) for name, multi in results.items()]
    nr.close_connections(on_failed=True)
    return sorted(bundles, key=lambda b: (b.site, b.device))


def to_bundle(nr: Nornir, name: str, multi: Any) -> Bundle:
    first = multi[0]
    if not first.failed:
        return first.result  # type: ignore[no-any-return]
    site = str(nr.inventory.hosts[name].get("site", "unknown"))
    exc = first.exception
    unreachable = isinstance(exc, DeviceError) and not isinstance(exc, AgentCallError) and (
        "cannot connect" in str(exc) or "handshake" in str(exc))
    return Bundle(name, site, error=reason(exc), unreachable=unreachable)


def reason(exc: BaseException | None) -> str:
    if isinstance(exc, FleetError):
        return exc.line()
    return f"{type(exc).__name__}: {exc}" if exc else "unknown failure"


def summarize(bundles: list[Bundle]) -> dict[str, Any]:
    good = [b for b in bundles if b.ok]
    return {"devices": len(bundles), "exported": len(good),
            "unreachable": [b.device for b in bundles if b.unreachable],
            "failed": [b.device for b in bundles if not b.ok and not b.unreachable],
            "bytes": sum(b.bytes for b in good), "log_bytes": sum(b.log_bytes for b in good)}
