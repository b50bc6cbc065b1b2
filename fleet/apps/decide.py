"""What deploying an application bundle would do on one device: a pure function of its facts.

`decide_app` takes what the device said (`Info`, `DeployedApps`, `Blobs`),
the signed bundle's manifest and the device's configuration, and returns a
`DevicePlan`: change, current or refused (with the reason), the version the
device gets (the bundle's files for the device's platform plus its
per-device files), which blobs are missing and how many bytes must still
travel (a partial blob counts only what has not arrived), and the free disk
after. `fleet app plan` shows it; the deploy task acts on the same value, so
the two cannot disagree. Order of the checks: platform, runtime version,
configuration, another deploy of this app in flight, already current, cameras
(every bound camera answered the device's RTSP probe, unless `allow_unreachable`:
the refusal reads ``camera-unreachable: NAME (STATUS)``), disk. With
``engine="iot-jobs"`` one shared job document carries the bundle to every device,
so a device whose configuration needs its own files (node overrides, registry
camera bindings and their sealed credentials) is refused after the configuration
check: ``per-device-config: ...; deploy over ssh`` (`per_device_needs`).

>>> plan = decide_app(info, apps, blobs, target)    # doctest: +SKIP
>>> plan.state, plan.send_bytes                      # doctest: +SKIP
('change', 4096)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet_runtime.appbundle import AppManifest, Refusal, check_runtime, platform_variant
from fleet_runtime.bundle import BundleError
from fleet_runtime.platforms import device_platform

from fleet.apps.reach import REACHABLE
from fleet.facts import APP_BUSY, APP_STAGED, Blobs, DeployedApps, Info


@dataclass(frozen=True)
class Blob:
    sha256: str
    size: int


@dataclass(frozen=True)
class Target:
    """The bundle and one device's configuration: everything but the device's facts."""

    manifest: AppManifest
    config_files: dict[str, bytes] = field(default_factory=dict)  # path -> content
    cameras: dict[str, list[str]] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)
    refusal: str | None = None  # the configuration's own refusal (A2's checks)
    set_nodes: tuple[str, ...] = ()  # parameters a layer above the graph sets (override.json)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version


@dataclass(frozen=True)
class DevicePlan:
    state: str  # change | current | refused
    target: str
    current: str | None = None
    reason: str = ""
    platform: str | None = None
    app_state: str = "absent"  # the device's flow state for this app
    resume_from: str | None = None  # an earlier deploy of this target got this far
    files: tuple[dict[str, Any], ...] = ()  # the version: device path, sha256, size
    send: tuple[tuple[Blob, int], ...] = ()  # missing blobs and the bytes already there
    send_bytes: int = 0
    free_bytes: int | None = None
    free_after: int | None = None
    cameras: tuple[tuple[str, str], ...] = ()  # bound camera name, its probe status

    def release(self, target: Target) -> dict[str, Any]:
        """The manifest `fleet-agent app stage` builds this version from."""
        doc: dict[str, Any] = {"name": target.name, "version": target.version,
                               "files": list(self.files)}
        # Source URIs go in the manifest (`--camera NODE=URI`); registry camera *names* do not:
        # the per-device override.json binds them, resolved in the device's sealed cameras.json.
        uris = {node: ",".join(values) for node, values in target.cameras.items()
                if values and all(_is_source_uri(v) for v in values)}
        if uris:
            doc["cameras"] = uris
        if target.health:
            doc["health"] = dict(target.health)
        return doc

    def row(self) -> dict[str, Any]:
        """The plan's view of this device (no file list, no secrets)."""
        return {"state": self.state, "reason": self.reason, "current": self.current,
                "target": self.target, "app_state": self.app_state,
                "resume_from": self.resume_from,
                "platform": self.platform, "send_bytes": self.send_bytes,
                "send_blobs": len(self.send), "free_bytes": self.free_bytes,
                "free_after": self.free_after,
                "cameras": [{"name": n, "status": s, "reachable": s == REACHABLE}
                            for n, s in self.cameras]}


def _is_source_uri(value: str) -> bool:
    return "://" in value or value.startswith("synthetic:")


def version_files(target: Target, platform: str) -> tuple[dict[str, Any], ...] | str:
    """The version's files for `platform` (device path, sha256, size), or why there are none."""
    variant = platform_variant(target.manifest, platform)
    if isinstance(variant, Refusal):
        return variant.reason
    files = {path: {"path": path, "sha256": f.sha256, "size": f.size}
             for path, f in variant.files.items()}
    for path, data in target.config_files.items():
        files[path] = {"path": path, "sha256": hashlib.sha256(data).hexdigest(),
                       "size": len(data)}
    return tuple(files[p] for p in sorted(files))


def blobs_of(files: tuple[dict[str, Any], ...]) -> list[Blob]:
    """Each distinct blob of a version once (two paths may share content)."""
    seen: dict[str, Blob] = {}
    for f in files:
        seen.setdefault(f["sha256"], Blob(f["sha256"], int(f["size"])))
    return list(seen.values())


def decide_app(info: Info, apps: DeployedApps, blobs: Blobs | None, target: Target,
               files: tuple[dict[str, Any], ...] | str,
               cameras: Mapping[str, str] | None = None,
               allow_unreachable: bool = False, engine: str = "ssh",
               device: str = "the device") -> DevicePlan:
    """The decision (see the module's doc). `files` is `version_files` for the device's
    platform; `blobs` is the device's answer for those files' blobs (None when the
    platform is refused and nothing was asked); `cameras` the probe status of each bound
    camera (`fleet.apps.reach`; None when none is bound or nothing was probed); `engine`
    the rollout engine (``ssh`` or ``iot-jobs``), `device` its name for the reasons."""
    app = apps.get(target.name)
    base = DevicePlan(state="refused", target=target.version,
                      current=app.committed if app else None,
                      platform=device_platform(info.arch or "") or info.arch,
                      app_state=app.state if app else "absent",
                      cameras=tuple(sorted((cameras or {}).items())))
    if isinstance(files, str):
        return _with(base, reason=files)
    try:
        check_runtime(target.manifest, info.agent_version or "0")
    except BundleError as exc:
        return _with(base, reason=exc.message)
    if target.refusal:
        return _with(base, reason=target.refusal)
    needs = per_device_needs(target) if engine == "iot-jobs" else None
    if needs:
        return _with(base, reason=f"per-device-config: iot-jobs cannot carry {device}'s "
                     f"{needs}; deploy over ssh")
    if app is not None and app.state in APP_BUSY and app.target not in (None, target.version):
        return _with(base, reason=f"a deploy of {target.name} {app.target} is in progress "
                     f"there ({app.state}); let it finish, or `fleet app rollback`")
    if app is not None and app.state == "done" and app.committed == target.version:
        return _with(base, state="current", reason=f"already runs {target.version}",
                     files=files)
    dead = [f"{n} ({s})" for n, s in sorted((cameras or {}).items()) if s != REACHABLE]
    if dead and not allow_unreachable:
        return _with(base, reason=f"camera-unreachable: {', '.join(dead)}; the device cannot "
                     "open it: fix the camera or its registry entry, or pass --allow-unreachable")
    assert blobs is not None
    send = tuple((b, blobs.partial.get(b.sha256, 0)) for b in blobs_of(files)
                 if b.sha256 not in blobs.have)
    need = sum(b.size - done for b, done in send)
    resume = app.state if app is not None and app.target == target.version and \
        app.state in APP_STAGED else None
    plan = _with(base, state="change", files=files, send=send, send_bytes=need, resume_from=resume,
                 free_bytes=blobs.free_bytes, free_after=blobs.free_bytes - need)
    if need and need + blobs.reserve_bytes > blobs.free_bytes:
        return _with(plan, state="refused",
                     reason=f"too little disk: {need} bytes to send + {blobs.reserve_bytes} "
                     f"reserve, {blobs.free_bytes} free; free space (`fleet app remove`) first")
    return plan


def per_device_needs(target: Target) -> str | None:
    """What of the device's configuration one shared job document cannot carry, or None.

    Parameters set above the graph need the device's ``override.json``; registry camera
    bindings need it and the sealed credentials. An ``override.json`` holding only the
    graph's own values and routes repeats what the bundle's files give the device."""
    needs = []
    bound = sorted(node for node, values in target.cameras.items()
                   if values and not all(_is_source_uri(v) for v in values))
    if bound:
        needs.append(f"camera bindings ({', '.join(bound)})")
    if target.set_nodes:
        needs.append(f"node settings ({', '.join(sorted(target.set_nodes))})")
    return " and ".join(needs) or None


def _with(plan: DevicePlan, **changes: Any) -> DevicePlan:
    from dataclasses import replace

    return replace(plan, **changes)
