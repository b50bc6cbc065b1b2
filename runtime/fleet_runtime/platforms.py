"""Platforms: architecture tags in file names, and the files a device of one platform takes.

A package carries one variant per platform the way Baidu BIE's program
packages do: a file whose name carries an architecture tag (``helper-linux-amd64``,
``linux-arm64-v8_helper``, ``libblur-linux-amd64.so``), or a folder named by
the tag (``native/linux-arm64-v8/libblur.so``), is installed only on that
platform, under its name with the tag removed. Untagged files go everywhere.

A package supports a platform when every tagged file it ships has a variant
for that platform; an application supports the platforms all its packages
support ("*" when nothing is tagged).

>>> split_tag("packages/p/bin/helper-linux-amd64")
Tagged(platform='linux-amd64', install='packages/p/bin/helper')
>>> device_platform("aarch64")
'linux-arm64-v8'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

ANY = "*"
# BIE's tags, longest first so "linux-arm64-v8" is not read as a shorter tag
PLATFORMS = ("linux-arm64-v8", "windows-amd64", "darwin-amd64", "linux-arm-v7", "linux-amd64")
# what `uname -m` (the device identity's ``arch``) says -> our tag
MACHINES = {
    "aarch64": "linux-arm64-v8", "arm64": "linux-arm64-v8", "x86_64": "linux-amd64",
    "amd64": "linux-amd64", "armv7l": "linux-arm-v7", "armhf": "linux-arm-v7",
}
_TAGS = "|".join(re.escape(t) for t in PLATFORMS)
_PREFIX = re.compile(rf"^(?P<tag>{_TAGS})[-_.](?P<rest>.+)\Z")
_SUFFIX = re.compile(rf"^(?P<rest>.+?)[-_.](?P<tag>{_TAGS})(?P<ext>\.[^.]+)?\Z")


@dataclass(frozen=True)
class Tagged:
    platform: str | None  # None: the file goes to every platform
    install: str  # where it lands on the device (the path without its tag)


def device_platform(arch: str) -> str | None:
    """A device's platform tag from its ``arch`` (``uname -m``) or a tag itself; None if unknown."""
    return arch if arch in PLATFORMS else MACHINES.get(arch)


def split_tag(path: str) -> Tagged:
    """The platform a bundle path is for and its path on the device; ValueError if two tags."""
    parts = path.split("/")
    found: list[tuple[int, str, str]] = []  # (index, tag, part without the tag)
    for index, part in enumerate(parts):
        tag, rest = _part_tag(part)
        if tag is not None:
            found.append((index, tag, rest))
    if not found:
        return Tagged(None, path)
    if len(found) > 1:
        raise ValueError(f"{path!r}: more than one architecture tag "
                         f"({', '.join(t for _, t, _ in found)}); keep one")
    index, tag, rest = found[0]
    kept = parts[:index] + ([rest] if rest else []) + parts[index + 1:]
    return Tagged(tag, "/".join(kept))


def _part_tag(part: str) -> tuple[str | None, str]:
    if part in PLATFORMS:
        return part, ""
    if match := _PREFIX.match(part):
        return match["tag"], match["rest"]
    if match := _SUFFIX.match(part):
        return match["tag"], match["rest"] + (match["ext"] or "")
    return None, part


def package_of(path: str) -> str:
    """The package folder a bundle path belongs to (``packages/<dir>``), else its top folder."""
    parts = path.split("/")
    return "/".join(parts[:2]) if parts[0] == "packages" and len(parts) > 2 else parts[0]


def package_platforms(paths: Iterable[str]) -> tuple[str, ...]:
    """The platforms one package's files support: ``("*",)`` when none is tagged."""
    wanted: dict[str, set[str]] = {}  # tagged install path -> platforms that have it
    for path in paths:
        tagged = split_tag(path)
        if tagged.platform is not None:
            wanted.setdefault(tagged.install, set()).add(tagged.platform)
    if not wanted:
        return (ANY,)
    common = set.intersection(*wanted.values())
    return tuple(p for p in PLATFORMS if p in common)


def app_platforms(paths: Iterable[str]) -> tuple[str, ...]:
    """The platforms every package of an application supports (``("*",)``: any)."""
    by_package: dict[str, list[str]] = {}
    for path in paths:
        by_package.setdefault(package_of(path), []).append(path)
    result: set[str] | None = None
    for files in by_package.values():
        supported = package_platforms(files)
        if supported != (ANY,):
            result = set(supported) if result is None else result & set(supported)
    if result is None:
        return (ANY,)
    return tuple(p for p in PLATFORMS if p in result)


def install_paths(paths: Iterable[str], platform: str) -> dict[str, str]:
    """Device path -> bundle path for `platform`; ValueError when two files land on one path."""
    chosen: dict[str, str] = {}
    for path in paths:
        tagged = split_tag(path)
        if tagged.platform not in (None, platform):
            continue
        if tagged.install in chosen:
            raise ValueError(f"{chosen[tagged.install]!r} and {path!r} both install as "
                             f"{tagged.install!r} on {platform}; keep one")
        chosen[tagged.install] = path
    return chosen


def platform_problems(paths: Iterable[str]) -> list[str]:
    """Why these bundle paths cannot make one variant per platform (empty when they can)."""
    paths = list(paths)
    problems: list[str] = []
    tagged: set[str] = set()
    for path in paths:
        try:
            tag = split_tag(path).platform
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if tag:
            tagged.add(tag)
    if problems:
        return problems
    for platform in sorted(tagged) or [ANY]:
        try:
            install_paths(paths, platform)
        except ValueError as exc:
            problems.append(str(exc))
    if tagged and not app_platforms(paths):
        problems.append("no platform has a variant of every tagged file: "
                        + "; ".join(_coverage(paths)))
    return problems


def _coverage(paths: list[str]) -> list[str]:
    by_package: dict[str, list[str]] = {}
    for path in paths:
        by_package.setdefault(package_of(path), []).append(path)
    return [f"{pkg} has {', '.join(package_platforms(files))}"
            for pkg, files in sorted(by_package.items()) if package_platforms(files) != (ANY,)]
