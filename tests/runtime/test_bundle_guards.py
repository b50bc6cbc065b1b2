"""Bundle guards that mutation testing found unchecked (docs/promises.md): manifest limits
and shapes, hooks, the downgrade floor's edge, the payload sink, a truncated payload."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from fleet_runtime import bundle
from fleet_runtime.bundle import BundleError, Keyring

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures_bundle import ARCH, HARDWARE, default_files, make_bundle, make_manifest, new_key  # noqa: E402

KEY = new_key()
DIGEST = "0" * 64


def doc(**changes: Any) -> dict[str, Any]:
    out = make_manifest(KEY, default_files("1.1.0")).as_json()
    out.update(changes)
    return out


def parse(document: dict[str, Any]) -> bundle.Manifest:
    return bundle.parse_manifest(json.dumps(document).encode())


def refusal(document: dict[str, Any]) -> str:
    with pytest.raises(BundleError) as info:
        parse(document)
    return info.value.message


def test_a_manifest_that_is_not_json_is_a_bundle_error() -> None:
    with pytest.raises(BundleError, match="not JSON"):
        bundle.parse_manifest(b'{"format": 1,')


def test_a_manifest_without_files_is_refused() -> None:
    assert "1+ files" in refusal(doc(files=[]))


def test_declared_sizes_from_empty_up_to_the_limit() -> None:
    limit = bundle.MAX_BUNDLE_BYTES
    assert parse(doc(files=[{"path": "empty", "size": 0, "sha256": DIGEST}])).total_size == 0
    assert parse(doc(files=[{"path": "big", "size": limit, "sha256": DIGEST}])).total_size == limit
    assert "bad size" in refusal(doc(files=[{"path": "big", "size": limit + 1, "sha256": DIGEST}]))
    halves = [{"path": "a", "size": limit // 2, "sha256": DIGEST},
              {"path": "b", "size": limit // 2 + 1, "sha256": DIGEST}]
    assert "larger than allowed" in refusal(doc(files=halves))


def test_a_file_without_a_mode_is_0644() -> None:
    manifest = parse(doc(files=[{"path": "x", "size": 1, "sha256": DIGEST}]))
    assert manifest.files[0].mode == 0o644


@pytest.mark.parametrize("value", [[], 5, [HARDWARE, 7]])
def test_hardware_must_be_a_non_empty_list_of_strings(value: Any) -> None:
    assert "non-empty list of strings" in refusal(doc(hardware=value))


def test_hooks_are_kept_and_must_name_payload_files() -> None:
    assert parse(doc(hooks={"selftest": "opt/edgefleet/VERSION"})).hooks == {
        "selftest": "opt/edgefleet/VERSION"}
    assert "not a payload file" in refusal(doc(hooks={"selftest": "opt/missing"}))
    assert "unknown hook" in refusal(doc(hooks={"pre-boot": "opt/edgefleet/VERSION"}))


def test_reinstalling_the_committed_version_needs_no_permit() -> None:
    manifest = make_manifest(KEY, default_files("1.1.0"), version="1.1.0")
    bundle.check_compatible(manifest, hardware=HARDWARE, arch=ARCH, current="1.2.0",
                            committed="1.1.0")
    with pytest.raises(BundleError, match="no signed downgrade permit"):
        bundle.check_compatible(manifest, hardware=HARDWARE, arch=ARCH, current="1.1.0",
                                committed="1.1.1")


def test_trailing_zero_components_do_not_change_a_version() -> None:
    assert bundle.compare_versions("1", "1.0.0") == 0
    assert bundle.compare_versions("2.0", "2") == 0
    assert bundle.compare_versions("1.0.0.1", "1") > 0


def test_the_sink_never_writes_through_a_link_or_over_a_file(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("keep")
    root = tmp_path / "slot"
    root.mkdir()
    (root / "link").symlink_to(outside)
    (root / "existing").write_text("old")
    sink = bundle.DirectorySink(root)
    for name in ("link", "existing"):
        with pytest.raises(OSError):
            sink.begin(bundle.FileEntry(name, 3, DIGEST))
    assert outside.read_text() == "keep" and (root / "existing").read_text() == "old"


def test_a_bundle_that_ends_before_a_listed_file_names_it(tmp_path: Path) -> None:
    files = default_files("1.1.0")
    whole = make_bundle(KEY, files)
    manifest = make_manifest(KEY, files)
    ring = Keyring()
    ring.add(KEY.public_key())
    last = manifest.files[-1].path
    # the same bundle without its last member: cut at that member's header, end the tar cleanly
    cut = whole.index(f"payload/{last}".encode()) // 512 * 512
    with pytest.raises(BundleError, match=f"first '{last}'") as info:
        bundle.read_bundle(io.BytesIO(whole[:cut] + bytes(1024)), ring, None)
    assert info.value.code == "truncated"


def test_progress_counts_every_payload_byte_once(tmp_path: Path) -> None:
    files = default_files("1.1.0")
    seen: list[tuple[int, int]] = []
    ring = Keyring()
    ring.add(KEY.public_key())
    bundle.read_bundle(io.BytesIO(make_bundle(KEY, files)), ring, None,
                       on_progress=lambda done, total: seen.append((done, total)))
    total = sum(len(data) for data in files.values())
    assert seen and seen[-1] == (total, total)
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
