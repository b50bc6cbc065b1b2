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
from fixtures_bundle import (  # noqa: E402
    ARCH,
    HARDWARE,
    default_files,
    make_bundle,
    make_manifest,
    new_key,
    raw_bundle,
    signed,
)

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


# --------------------------------------------------------------- versions, keys, paths


@pytest.mark.parametrize("a, b, order", [
    ("1.2.0", "1.2", 0), ("1.2.0.0", "1.2", 0), ("1.2.0-rc1", "1.2.0", -1),
    ("1.2.0", "1.2.0-rc1", 1), ("1.2.0-rc1", "1.2.0-rc1", 0), ("1.10", "1.9", 1),
])
def test_version_order(a: str, b: str, order: int) -> None:
    assert bundle.compare_versions(a, b) == order


def test_a_key_that_is_not_an_ed25519_pem_is_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    with pytest.raises(BundleError, match="not a PEM public key"):
        bundle.load_public_key(b"not a key")
    ec_pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(BundleError, match="not an Ed25519 key"):
        bundle.load_public_key(ec_pem)
    assert bundle.key_id(bundle.load_public_key(bundle.public_pem(KEY.public_key()))) == \
        bundle.key_id(KEY.public_key())


def test_an_unknown_key_id_names_the_keys_the_ring_holds() -> None:
    ring = Keyring()
    with pytest.raises(BundleError, match=r"\(empty\)"):
        ring.verify("abc", b"", b"")
    kid = ring.add(KEY.public_key())
    with pytest.raises(BundleError, match=rf"\({kid}\)"):
        ring.verify("abc", b"", b"")


@pytest.mark.parametrize("name", ["", "/etc/x", "a\\b", "a\x00b", ".", "a/./b", "a//b", "..",
                                  "a/../b", ".fleet-bundle/manifest.json", None, 5])
def test_unsafe_payload_paths_are_refused(name: Any) -> None:
    with pytest.raises(BundleError, match="refusing path"):
        bundle.safe_path(name)


@pytest.mark.parametrize("name", ["etc/os-release", "a", "-dash", ".hidden/x", "A/B"])
def test_ordinary_payload_paths_are_kept(name: str) -> None:
    assert bundle.safe_path(name) == name


# --------------------------------------------------------------- manifest fields


@pytest.mark.parametrize("changes, words", [
    ({"format": 0}, "format 0"), ({"format": 2}, "format 2"),
    ({"name": 5}, "bad name"), ({"name": ""}, "bad name"),
])
def test_manifest_format_and_name(changes: dict[str, Any], words: str) -> None:
    assert words in refusal(doc(**changes))


def test_a_manifest_listing_a_path_twice_is_refused() -> None:
    twice = [{"path": "x", "size": 1, "sha256": DIGEST}] * 2
    with pytest.raises(BundleError) as info:
        parse(doc(files=twice))
    assert info.value.code == "duplicate-member"


@pytest.mark.parametrize("current, allowed", [("1.5.0", True), ("1.0.0", True), ("0.9.9", False)])
def test_min_version_is_a_floor_for_the_running_version(current: str, allowed: bool) -> None:
    manifest = make_manifest(KEY, default_files("2.0.0"), version="2.0.0", min_version="1.0.0")
    check = lambda: bundle.check_compatible(manifest, hardware=HARDWARE, arch=ARCH,  # noqa: E731
                                            current=current)
    if allowed:
        check()
    else:
        with pytest.raises(BundleError, match="needs at least 1.0.0"):
            check()


def test_a_device_that_reports_no_version_can_still_install() -> None:
    manifest = make_manifest(KEY, default_files("1.1.0"))
    bundle.check_compatible(manifest, hardware=HARDWARE, arch=ARCH, current="unknown")


# --------------------------------------------------------------- the stream


def ring() -> Keyring:
    out = Keyring()
    out.add(KEY.public_key())
    return out


def read_raw(data: bytes) -> BundleError:
    with pytest.raises(BundleError) as info:
        bundle.read_bundle(io.BytesIO(data), ring(), None)
    return info.value


def one_file(data: bytes) -> tuple[bytes, bytes, dict[str, Any]]:
    document = make_manifest(KEY, {"f": data}).as_json()
    raw, sig = signed(KEY, document)
    return raw, sig, document


def test_the_first_member_must_be_the_manifest() -> None:
    import tarfile

    from fixtures_bundle import add

    raw, sig, _ = one_file(b"x")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add(tar, "a.json", raw)  # sorts before manifest.json: a bare `>` would let it through
        add(tar, bundle.SIGNATURE, sig)
    error = read_raw(out.getvalue())
    assert error.code == "bad-format" and "found 'a.json'" in error.message


def test_link_and_device_members_are_named_for_what_they_are() -> None:
    import tarfile

    raw, sig, _ = one_file(b"x")
    link = read_raw(raw_bundle(raw, sig, [("payload/f", b"", tarfile.SYMTYPE, "/etc/passwd")]))
    assert link.code == "unsafe-member" and "is a link" in link.message
    fifo = read_raw(raw_bundle(raw, sig, [("payload/f", b"", tarfile.FIFOTYPE, "")]))
    assert fifo.code == "unsafe-member" and "device or special file" in fifo.message


def test_a_member_bigger_or_smaller_than_declared_is_refused() -> None:
    import tarfile

    raw, sig, _ = one_file(b"xx")
    assert read_raw(raw_bundle(raw, sig, [("payload/f", b"xxx", tarfile.REGTYPE, "")])).code \
        == "oversize"
    assert read_raw(raw_bundle(raw, sig, [("payload/f", b"x", tarfile.REGTYPE, "")])).code \
        == "size-mismatch"


def test_a_changed_payload_is_refused_whichever_way_its_digest_sorts() -> None:
    import hashlib
    import tarfile

    raw, sig, document = one_file(b"original")
    expected = document["files"][0]["sha256"]
    below = next(d for d in (bytes([i]) * 8 for i in range(256))
                 if hashlib.sha256(d).hexdigest() < expected)
    above = next(d for d in (bytes([i]) * 8 for i in range(256))
                 if hashlib.sha256(d).hexdigest() > expected)
    for payload in (below, above):
        assert read_raw(raw_bundle(raw, sig, [("payload/f", payload, tarfile.REGTYPE, "")])).code \
            == "hash-mismatch"


def test_an_empty_stream_is_not_a_bundle() -> None:
    assert read_raw(b"").code == "truncated"


# --------------------------------------------------------------- second mutation round


def test_the_file_count_limit_is_inclusive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle, "MAX_FILES", 3)
    files = [{"path": f"f{i}", "size": 1, "sha256": DIGEST} for i in range(4)]
    assert len(parse(doc(files=files[:3])).files) == 3
    assert "lists 4 files, more than the 3" in refusal(doc(files=files))


def test_a_manifest_of_many_files_is_not_mistaken_for_duplicates() -> None:
    files = [{"path": f"f{i}", "size": 1, "sha256": DIGEST} for i in range(300)]
    assert len(parse(doc(files=files)).files) == 300


@pytest.mark.parametrize("entry, words", [
    ({"path": "x", "size": 1, "sha256": "not-hex"}, "bad sha256"),
    ({"path": "x", "size": 1, "sha256": 5}, "bad sha256"),
    ({"path": "x", "size": -1, "sha256": DIGEST}, "bad size"),
])
def test_a_file_entry_with_a_bad_digest_or_size_is_refused(entry: dict[str, Any], words: str) -> None:
    assert words in refusal(doc(files=[entry]))


@pytest.mark.parametrize("manifest", [b"{not json", b"[1, 2]"])
def test_a_manifest_member_that_is_not_a_json_object_is_refused_before_the_signature(
        manifest: bytes) -> None:
    assert read_raw(raw_bundle(manifest, b"\0" * 64, [])).code == "bad-signature"


def test_a_bundle_that_ends_before_two_files_names_the_first(tmp_path: Path) -> None:
    files = {"a": b"1", "b": b"2", "c": b"3"}
    whole = make_bundle(KEY, files)
    cut = whole.index(b"payload/b") // 512 * 512
    error = read_raw(whole[:cut] + bytes(1024))
    assert error.code == "truncated" and "2 file(s), first 'b'" in error.message
