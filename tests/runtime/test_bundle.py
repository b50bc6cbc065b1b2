"""The bundle format: a round trip, then every way a bundle can be bad, each refused by code."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

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
OTHER = new_key()


def ring(*keys) -> Keyring:
    out = Keyring()
    for key in keys or (KEY,):
        out.add(key.public_key())
    return out


def read(data: bytes, keyring: Keyring | None = None, dest: Path | None = None):
    sink = bundle.DirectorySink(dest) if dest else None
    return bundle.read_bundle(io.BytesIO(data), keyring or ring(), sink)


def code_of(data: bytes, keyring: Keyring | None = None, dest: Path | None = None) -> str:
    with pytest.raises(BundleError) as info:
        read(data, keyring, dest)
    assert info.value.message  # every refusal says what
    return info.value.code


def test_round_trip_writes_every_file(tmp_path):
    files = default_files("1.1.0")
    manifest = read(make_bundle(KEY, files), dest=tmp_path)
    assert manifest.version == "1.1.0" and manifest.key_id == bundle.key_id(KEY.public_key())
    for path, data in files.items():
        assert (tmp_path / path).read_bytes() == data


def test_write_bundle_api_produces_a_readable_bundle(tmp_path):
    files = default_files("2.0.0")
    sources = {}
    for path, data in files.items():
        sources[path] = tmp_path / "src" / path
        sources[path].parent.mkdir(parents=True, exist_ok=True)
        sources[path].write_bytes(data)
    manifest = make_manifest(KEY, files, version="2.0.0", modes={"etc/os-release": 0o755})
    out = io.BytesIO()
    bundle.write_bundle(out, manifest, KEY, sources)
    got = read(out.getvalue(), dest=tmp_path / "dest")
    assert got.version == "2.0.0"
    assert (tmp_path / "dest/etc/os-release").stat().st_mode & 0o777 == 0o755


def test_manifest_is_first_and_readable_without_the_payload():
    data = make_bundle(KEY)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames()[:2] == ["manifest.json", "manifest.sig"]
    # only the first few KiB are needed to know the target version
    assert bundle.read_manifest(io.BytesIO(data[:4096])).version == "1.1.0"


@pytest.mark.parametrize("cut", [100, 700, 2000, 5000, 9000, "last-byte"])
def test_truncated_bundle_is_refused(tmp_path, cut):
    data = make_bundle(KEY)
    end = len(data.rstrip(b"\0")) - 1 if cut == "last-byte" else cut
    assert code_of(data[:end], dest=tmp_path) in {"truncated", "bad-format"}


def test_tampered_payload_is_refused(tmp_path):
    data = bytearray(make_bundle(KEY))
    at = data.index(b"VERSION_ID")  # inside etc/os-release's data
    data[at] ^= 0x01
    assert code_of(bytes(data), dest=tmp_path) == "hash-mismatch"


def test_tampered_manifest_is_refused():
    data = make_bundle(KEY)
    assert b'"version": "1.1.0"' in data
    assert code_of(data.replace(b'"version": "1.1.0"', b'"version": "9.1.0"', 1)) == "bad-signature"


def test_unknown_key_id_is_refused():
    assert code_of(make_bundle(OTHER), ring(KEY)) == "untrusted-key"


def test_signature_by_an_untrusted_key_is_refused():
    # the manifest claims the trusted key id, but OTHER signed it
    manifest = make_manifest(KEY, default_files("1.1.0"))
    raw = manifest.encode()
    data = raw_bundle(raw, OTHER.sign(raw), [])
    assert code_of(data) == "bad-signature"


def test_empty_keyring_trusts_nothing():
    assert code_of(make_bundle(KEY), Keyring()) == "untrusted-key"


def _hostile(members, files=None):
    """A correctly signed manifest for `files`, followed by hostile members."""
    files = files or {"ok.txt": b"hello"}
    manifest = make_manifest(KEY, files)
    raw, sig = bundle.sign_manifest(manifest, KEY)
    return raw_bundle(raw, sig, members)


@pytest.mark.parametrize("name", ["payload/../ok.txt", "payload/a/../../etc/passwd",
                                  "payload//etc/passwd", "/etc/passwd", "../payload/ok.txt"])
def test_escaping_member_names_are_refused(tmp_path, name):
    code = code_of(_hostile([(name, b"hello", tarfile.REGTYPE, "")]), dest=tmp_path)
    assert code in {"unsafe-path", "unexpected-member"}
    assert not (tmp_path.parent / "ok.txt").exists()


@pytest.mark.parametrize("kind,link", [(tarfile.SYMTYPE, "/etc/passwd"), (tarfile.LNKTYPE, "x"),
                                       (tarfile.CHRTYPE, ""), (tarfile.BLKTYPE, ""),
                                       (tarfile.FIFOTYPE, ""), (tarfile.DIRTYPE, "")])
def test_links_and_device_files_are_refused(tmp_path, kind, link):
    data = _hostile([("payload/ok.txt", b"", kind, link)])
    assert code_of(data, dest=tmp_path) == "unsafe-member"
    assert not (tmp_path / "ok.txt").exists()


def test_duplicate_member_is_refused(tmp_path):
    members = [("payload/ok.txt", b"hello", tarfile.REGTYPE, "")] * 2
    assert code_of(_hostile(members), dest=tmp_path) == "duplicate-member"


def test_member_not_in_manifest_is_refused(tmp_path):
    members = [("payload/ok.txt", b"hello", tarfile.REGTYPE, ""),
               ("payload/extra.bin", b"x", tarfile.REGTYPE, "")]
    assert code_of(_hostile(members), dest=tmp_path) == "unexpected-member"


def test_oversize_member_is_refused_before_writing(tmp_path):
    members = [("payload/ok.txt", b"hello, and much more than declared", tarfile.REGTYPE, "")]
    assert code_of(_hostile(members), dest=tmp_path) == "oversize"
    assert not (tmp_path / "ok.txt").exists()


def test_oversize_manifest_is_refused():
    """Refused on its tar header: no byte of it is read, so the stream may stop right there."""
    info = tarfile.TarInfo(bundle.MANIFEST)
    info.size = bundle.MAX_MANIFEST_BYTES + 1
    assert code_of(info.tobuf(tarfile.PAX_FORMAT)) == "oversize"


def test_manifest_of_a_root_filesystem_fits_the_manifest_limit():
    """MAX_FILES files with paths of 160 characters stay under MAX_MANIFEST_BYTES."""
    entry = bundle.FileEntry("usr/" + "p" * 156, 1 << 30, "f" * 64, 0o755)
    one = len(json.dumps({"files": [entry.as_json()] * 2}, indent=1, sort_keys=True)) // 2
    assert bundle.MAX_FILES >= 300_000
    assert one * bundle.MAX_FILES < bundle.MAX_MANIFEST_BYTES


def test_build_refuses_more_files_than_a_device_takes():
    entry = make_manifest(KEY, {"ok.txt": b"hello"}).files[0]
    with pytest.raises(BundleError, match=f"more than the {bundle.MAX_FILES} a device accepts"):
        bundle.build_manifest(name="x", version="1.0", hardware=["h"], arch=["a"], key="k",
                              files=[entry] * (bundle.MAX_FILES + 1))


def test_manifest_larger_than_a_device_reads_is_refused_before_parsing():
    raw = b"{" + b" " * bundle.MAX_MANIFEST_BYTES + b"}"
    with pytest.raises(BundleError, match="more than the .* a device reads"):
        bundle.parse_manifest(raw)


def test_missing_signature_member_is_refused():
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("payload/ok.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    assert code_of(out.getvalue()) == "bad-format"


@pytest.mark.parametrize("path", ["../escape", "/abs", "a/./b", ".fleet-bundle/manifest.json", ""])
def test_signed_manifest_with_unsafe_paths_is_still_refused(path):
    doc = json.loads(make_manifest(KEY, {"ok.txt": b"hello"}).encode())
    doc["files"][0]["path"] = path
    raw, sig = signed(KEY, doc)
    assert code_of(raw_bundle(raw, sig, [])) == "unsafe-path"


def test_signed_manifest_with_a_setuid_mode_is_refused():
    doc = json.loads(make_manifest(KEY, {"ok.txt": b"hello"}).encode())
    doc["files"][0]["mode"] = 0o4755
    raw, sig = signed(KEY, doc)
    assert code_of(raw_bundle(raw, sig, [])) == "bad-manifest"


def test_not_a_tar_at_all_is_refused():
    assert code_of(b"this is not a bundle" * 100) in {"truncated", "bad-format"}


def compat(manifest, **device):
    args = {"hardware": HARDWARE, "arch": ARCH, "current": "1.0.0", "committed": "1.0.0"}
    bundle.check_compatible(manifest, **{**args, **device})


def test_bundle_for_other_hardware_or_arch_is_refused():
    manifest = make_manifest(KEY, {"ok.txt": b"x"})
    with pytest.raises(BundleError, match="hardware") as info:
        compat(manifest, hardware="jetson-orin-nano")
    assert info.value.code == "wrong-hardware"
    with pytest.raises(BundleError) as info:
        compat(manifest, arch="x86_64")
    assert info.value.code == "wrong-arch"


def test_min_version_is_enforced():
    manifest = make_manifest(KEY, {"ok.txt": b"x"}, version="3.0.0", min_version="2.0.0")
    with pytest.raises(BundleError) as info:
        compat(manifest)
    assert info.value.code == "min-version"
    compat(manifest, current="2.0.0", committed="2.0.0")


def test_downgrade_needs_a_signed_permit():
    old = make_manifest(KEY, {"ok.txt": b"x"}, version="0.9.0", min_version=None)
    with pytest.raises(BundleError) as info:
        compat(old)
    assert info.value.code == "downgrade"
    wrong = make_manifest(KEY, {"ok.txt": b"x"}, version="0.9.0", min_version=None,
                          downgrade_permit={"version": "0.8.0", "reason": "x"})
    with pytest.raises(BundleError):
        compat(wrong)
    permitted = make_manifest(KEY, {"ok.txt": b"x"}, version="0.9.0", min_version=None,
                              downgrade_permit={"version": "0.9.0", "reason": "CVE fix regressed"})
    compat(permitted)


def test_downgrade_floor_is_the_committed_version_not_the_running_one():
    """Committed and running differ only while a slot is on trial (and installs are refused
    then); the floor anti-rollback protects is still the committed version, both ways."""
    between = make_manifest(KEY, {"ok.txt": b"x"}, version="1.5.0", min_version=None)
    # on trial at a newer 2.0.0, committed 1.0.0: 1.5.0 is no downgrade of what is committed
    compat(between, current="2.0.0", committed="1.0.0")
    # on trial at an older 1.0.0 (a permitted downgrade), committed 2.0.0: 1.5.0 is one
    with pytest.raises(BundleError) as info:
        compat(between, current="1.0.0", committed="2.0.0")
    assert info.value.code == "downgrade" and "older than committed 2.0.0" in info.value.message


@pytest.mark.parametrize("a,b,expected", [("1.0.0", "1.0", 0), ("1.10.0", "1.9.9", 1),
                                          ("1.2.0-rc1", "1.2.0", -1), ("2", "10", -1),
                                          ("1.0.0+build7", "1.0.0", 0)])
def test_version_order(a, b, expected):
    assert bundle.compare_versions(a, b) == expected


@pytest.mark.parametrize("bad", ["", "v1.0", "1..0", "latest", None])
def test_bad_versions_are_refused(bad):
    with pytest.raises(BundleError):
        bundle.parse_version(bad)
