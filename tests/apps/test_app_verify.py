"""fleet app verify: a bundle that is not what it claims is refused, one line, exit 2."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from appkit import PASS, PASSPHRASE
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fixtures_bundle import raw_bundle, signed
from fleet_runtime import bundle
from labkit import run_cli
from panorama_apps import write_app

from fleet import firmware

CODE = "packages/123456789012-TRACKER_CODE-1.0/src/app.py"


@pytest.fixture
def built(app_project, tmp_path) -> Path:
    app = write_app(tmp_path / "src", "tracker")
    res = run_cli(app_project.root, "app", "build", str(app), "--json", env=PASS)
    assert res.exit_code == 0, res.stderr
    return Path(json.loads(res.stdout)["path"])


def _verify(project, path: Path):
    return run_cli(project.root, "app", "verify", str(path))


def _refused(res, code: str) -> None:
    assert res.exit_code == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: bundle refused: {code}: "), lines
    assert not res.stdout


def _members(path: Path) -> tuple[bytes, list[tuple[str, bytes, bytes, str]]]:
    """The signed manifest and the payload members of a built bundle, to rework by hand."""
    with tarfile.open(path) as tar:
        raw = tar.extractfile(bundle.MANIFEST).read()  # type: ignore[union-attr]
        payload = [(m.name, tar.extractfile(m).read(), b"0", "")  # type: ignore[union-attr]
                   for m in tar.getmembers() if m.name.startswith(bundle.PAYLOAD)]
    return raw, payload


def _release_key(project) -> Ed25519PrivateKey:
    return firmware.load_signing_key(firmware.release_key(project), PASSPHRASE.encode())


def test_the_good_bundle_verifies(app_project, built):
    res = run_cli(app_project.root, "app", "verify", str(built), "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["ok"] is True


def test_a_tampered_file_is_refused(app_project, built):
    data = built.read_bytes()
    assert data.count(b"tracker module loaded") == 1
    built.write_bytes(data.replace(b"tracker module loaded", b"tracker module LOADED"))
    _refused(_verify(app_project, built), "hash-mismatch")


def test_a_truncated_bundle_is_refused(app_project, built):
    built.write_bytes(built.read_bytes()[: built.stat().st_size // 2])
    _refused(_verify(app_project, built), "truncated")


def test_a_member_larger_than_signed_is_refused(app_project, built):
    raw, payload = _members(built)
    payload = [(n, d + b"#" * 4096 if n.endswith(CODE) else d, k, ln) for n, d, k, ln in payload]
    doc = json.loads(raw)
    built.write_bytes(raw_bundle(*signed(_release_key(app_project), doc), payload))
    _refused(_verify(app_project, built), "oversize")


def test_a_path_leaving_the_bundle_is_refused(app_project, built):
    raw, payload = _members(built)
    payload.append((bundle.PAYLOAD + "../../etc/cron.d/evil", b"* * * * * root sh\n", b"0", ""))
    built.write_bytes(raw_bundle(*signed(_release_key(app_project), json.loads(raw)), payload))
    _refused(_verify(app_project, built), "unsafe-path")


def test_a_link_member_is_refused(app_project, built):
    raw, payload = _members(built)
    payload = [(n, b"", tarfile.SYMTYPE, "/etc/shadow") if n.endswith(CODE) else (n, d, k, ln)
               for n, d, k, ln in payload]
    built.write_bytes(raw_bundle(*signed(_release_key(app_project), json.loads(raw)), payload))
    _refused(_verify(app_project, built), "unsafe-member")


def test_a_bundle_signed_by_another_key_is_refused(app_project, built):
    raw, payload = _members(built)
    stranger = Ed25519PrivateKey.generate()
    doc = {**json.loads(raw), "key_id": bundle.key_id(stranger.public_key())}
    built.write_bytes(raw_bundle(*signed(stranger, doc), payload))
    _refused(_verify(app_project, built), "untrusted-key")


def test_a_manifest_changed_after_signing_is_refused(app_project, built):
    raw, payload = _members(built)
    _, signature = signed(_release_key(app_project), json.loads(raw))
    forged = raw.replace(b'"min_runtime": "0.1.0"', b'"min_runtime": "0.0.1"')
    assert forged != raw
    built.write_bytes(raw_bundle(forged, signature, payload))
    _refused(_verify(app_project, built), "bad-signature")


def test_an_ota_bundle_is_not_an_application(app_project, tmp_path):
    from fixtures_bundle import make_bundle

    path = tmp_path / "os.app"
    path.write_bytes(make_bundle(_release_key(app_project)))
    _refused(_verify(app_project, path), "bad-manifest")


def test_a_missing_bundle_is_a_usage_error(app_project, tmp_path):
    res = _verify(app_project, tmp_path / "nope.app")
    assert res.exit_code == 2 and "no application bundle at" in res.stderr


def test_the_device_verifies_the_controllers_bundle_with_its_own_keyring(app_project, built,
                                                                          tmp_path):
    from fleet_runtime import appbundle
    from fleet_runtime.bundle import DirectorySink, Keyring

    ring_dir = tmp_path / "device" / "etc/fleet/release-keys"
    firmware.export_keyring(app_project, ring_dir)
    dest = tmp_path / "device" / "staging"
    with open(built, "rb") as fh:
        manifest = appbundle.read_app_bundle(fh, Keyring.from_dir(ring_dir), DirectorySink(dest))
    assert (dest / CODE).read_bytes() == (tmp_path / "src" / "tracker_plain" / CODE).read_bytes()
    variant = appbundle.platform_variant(manifest, "aarch64")
    assert isinstance(variant, appbundle.Variant) and CODE in variant.files
    with open(built, "rb") as fh, pytest.raises(bundle.BundleError, match="untrusted-key|not in"):
        appbundle.read_app_bundle(fh, Keyring())


def test_inspect_and_list_of_a_file_that_is_no_bundle(app_project):
    junk = app_project.root / "apps" / "junk-1.0.app"
    junk.parent.mkdir()
    junk.write_bytes(b"\x00not a tar" * 100)
    res = run_cli(app_project.root, "app", "inspect", str(junk))
    _refused(res, "truncated")
    listed = json.loads(run_cli(app_project.root, "app", "list", "--json").stdout)["bundles"]
    assert [(r["name"], r["version"]) for r in listed] == [("junk-1.0", None)]
    assert listed[0]["error"].startswith("bundle refused: truncated")
