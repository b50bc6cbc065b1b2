"""Architecture tags in file names and the variant a device of one platform takes (data-driven)."""

from __future__ import annotations

import pytest
from fleet_runtime import platforms
from fleet_runtime.appbundle import AppManifest, Refusal, Variant, platform_variant
from fleet_runtime.bundle import FileEntry

P = "packages/ACME-HELPER-1.0"

SPLITS = [
    ("graphs/a/graph.json", None, "graphs/a/graph.json"),
    (f"{P}/bin/helper-linux-amd64", "linux-amd64", f"{P}/bin/helper"),
    (f"{P}/bin/linux-arm64-v8_helper", "linux-arm64-v8", f"{P}/bin/helper"),
    (f"{P}/lib/libblur-linux-arm-v7.so", "linux-arm-v7", f"{P}/lib/libblur.so"),
    (f"{P}/native/linux-arm64-v8/libblur.so", "linux-arm64-v8", f"{P}/native/libblur.so"),
    (f"{P}/bin/helper.linux-amd64", "linux-amd64", f"{P}/bin/helper"),
    (f"{P}/src/linux_tools.py", None, f"{P}/src/linux_tools.py"),  # not a tag
]


@pytest.mark.parametrize(("path", "platform", "install"), SPLITS)
def test_split_tag(path, platform, install):
    assert platforms.split_tag(path) == platforms.Tagged(platform, install)


def test_two_tags_in_one_path_are_refused():
    with pytest.raises(ValueError, match="more than one architecture tag"):
        platforms.split_tag(f"{P}/linux-amd64/helper-linux-arm64-v8")


SUPPORT = [
    ([f"{P}/program.yml", f"{P}/bin/run"], ("*",)),
    ([f"{P}/bin/h-linux-amd64", f"{P}/bin/h-linux-arm64-v8"], ("linux-arm64-v8", "linux-amd64")),
    # a second tagged file only for amd64: arm64 lacks it
    ([f"{P}/bin/h-linux-amd64", f"{P}/bin/h-linux-arm64-v8", f"{P}/lib/x-linux-amd64.so"],
     ("linux-amd64",)),
    ([f"{P}/bin/h-linux-amd64", f"{P}/lib/x-linux-arm64-v8.so"], ()),
]


@pytest.mark.parametrize(("paths", "supported"), SUPPORT)
def test_package_platforms(paths, supported):
    assert platforms.package_platforms(paths) == supported


def test_app_platforms_are_what_every_package_supports():
    paths = ["graphs/a/graph.json", "packages/CODE/src/app.py",
             f"{P}/bin/h-linux-amd64", f"{P}/bin/h-linux-arm64-v8",
             "packages/NATIVE/lib/x-linux-arm64-v8.so", "packages/NATIVE/lib/x-linux-arm-v7.so"]
    assert platforms.app_platforms(paths) == ("linux-arm64-v8",)
    assert platforms.app_platforms(paths[:2]) == ("*",)


PROBLEMS = [
    ([f"{P}/bin/h", f"{P}/bin/h-linux-amd64"], "both install as"),
    ([f"{P}/bin/h-linux-amd64", f"{P}/lib/x-linux-arm64-v8.so"], "no platform has a variant"),
    ([f"{P}/linux-amd64/h-linux-amd64"], "more than one architecture tag"),
]


@pytest.mark.parametrize(("paths", "message"), PROBLEMS)
def test_platform_problems(paths, message):
    problems = platforms.platform_problems(paths)
    assert problems and message in problems[0]


def _manifest(paths: list[str]) -> AppManifest:
    files = tuple(FileEntry(p, 1, "0" * 64, 0o755 if "/bin/" in p else 0o644) for p in paths)
    return AppManifest(name="a", version="1.0", key_id="k", graph=paths[0], min_runtime="0.1",
                       platforms=platforms.app_platforms(paths), packages=(), files=files)


TAGGED = ["graphs/a/graph.json", f"{P}/program.yml", f"{P}/bin/h-linux-amd64",
          f"{P}/bin/h-linux-arm64-v8"]
VARIANTS = [
    (TAGGED, "aarch64", {"graphs/a/graph.json", f"{P}/program.yml", f"{P}/bin/h"},
     f"{P}/bin/h-linux-arm64-v8"),
    (TAGGED, "linux-amd64", {"graphs/a/graph.json", f"{P}/program.yml", f"{P}/bin/h"},
     f"{P}/bin/h-linux-amd64"),
    (TAGGED, "armv7l", "ships variants for linux-arm64-v8, linux-amd64, not linux-arm-v7", None),
    (TAGGED, "riscv64", "unknown platform riscv64", None),
    (TAGGED[:2], "armv7l", {"graphs/a/graph.json", f"{P}/program.yml"}, None),
]


@pytest.mark.parametrize(("paths", "device", "expected", "helper"), VARIANTS)
def test_platform_variant(paths, device, expected, helper):
    result = platform_variant(_manifest(paths), device)
    if isinstance(expected, str):
        assert isinstance(result, Refusal) and expected in result.reason
        return
    assert isinstance(result, Variant) and set(result.files) == expected
    if helper:
        assert result.files[f"{P}/bin/h"].path == helper
