"""One version order for both halves: pre-release tags compare piece by piece, numbers as
numbers, so ``1.2.0-rc10`` is newer than ``1.2.0-rc9`` (the text order says the opposite),
and the device's downgrade guard follows it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fleet_runtime import bundle, versions
from fleet_runtime.bundle import BundleError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures_bundle import ARCH, HARDWARE, make_manifest, new_key  # noqa: E402

KEY = new_key()


@pytest.mark.parametrize("newer, older", [
    ("1.2.0-rc10", "1.2.0-rc9"), ("1.2.0-rc9", "1.2.0-rc1"), ("1.2.0", "1.2.0-rc10"),
    ("1.2.0-rc.10", "1.2.0-rc.9"), ("1.2.0-rc1", "1.2.0-rc"), ("1.2.0-rc1", "1.2.0-beta7"),
    ("1.10.0", "1.9.0"), ("1.0.0.1", "1"), ("2.0.0-alpha", "1.99.0"),
])
def test_versions_order_numerically(newer: str, older: str) -> None:
    assert versions.compare(newer, older) == 1 and versions.compare(older, newer) == -1
    assert bundle.compare_versions(newer, older) == 1
    assert versions.older(older, newer) and not versions.older(newer, older)


def test_a_sorted_list_of_release_candidates_ends_with_the_release() -> None:
    mixed = ["1.2.0", "1.2.0-rc10", "1.2.0-rc1", "1.2.0-rc9", "1.2.0-rc2"]
    assert sorted(mixed, key=versions.key) == [
        "1.2.0-rc1", "1.2.0-rc2", "1.2.0-rc9", "1.2.0-rc10", "1.2.0"]


@pytest.mark.parametrize("a, b", [("1.2", "1.2.0"), ("1.0.0+build7", "1.0.0"),
                                  ("1.2.0-rc10", "1.2.00-rc10")])
def test_equal_versions(a: str, b: str) -> None:
    assert versions.compare(a, b) == 0


@pytest.mark.parametrize("bad", ["", "v1.0", "1..0", "latest", "1.0\n", None])
def test_text_that_is_no_version_is_refused_and_counts_as_oldest(bad: object) -> None:
    with pytest.raises(versions.VersionError):
        versions.key(bad)  # type: ignore[arg-type]
    assert versions.older(bad, "0.0.1")  # type: ignore[arg-type]


def test_the_device_refuses_a_downgrade_from_rc10_to_rc9_without_a_permit() -> None:
    rc9 = make_manifest(KEY, {"ok.txt": b"x"}, version="1.2.0-rc9", min_version=None)
    with pytest.raises(BundleError) as info:
        bundle.check_compatible(rc9, hardware=HARDWARE, arch=ARCH, current="1.2.0-rc10",
                                committed="1.2.0-rc10")
    assert info.value.code == "downgrade"
    permitted = make_manifest(KEY, {"ok.txt": b"x"}, version="1.2.0-rc9", min_version=None,
                              downgrade_permit={"version": "1.2.0-rc9", "reason": "rc10 broke"})
    bundle.check_compatible(permitted, hardware=HARDWARE, arch=ARCH, current="1.2.0-rc10",
                            committed="1.2.0-rc10")


def test_the_device_takes_rc10_over_rc9_without_a_permit() -> None:
    rc10 = make_manifest(KEY, {"ok.txt": b"x"}, version="1.2.0-rc10", min_version="1.2.0-rc2")
    bundle.check_compatible(rc10, hardware=HARDWARE, arch=ARCH, current="1.2.0-rc9",
                            committed="1.2.0-rc9")
