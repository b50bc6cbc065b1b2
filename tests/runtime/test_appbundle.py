"""The device's check of an application bundle: the OTA reader's guards, the app manifest's own."""

from __future__ import annotations

import io
from typing import Any

import pytest
from fixtures_bundle import entries, make_bundle, new_key, raw_bundle, signed
from fleet_runtime import appbundle, bundle
from fleet_runtime.appbundle import AppManifest, AppPackage
from fleet_runtime.bundle import BundleError, Keyring

P = "packages/ACME-HELPER-1.0"
FILES = {
    "graphs/demo/graph.json": b'{"nodeGraph": {}}\n',
    f"{P}/program.yml": b"entry: bin/helper\n",
    f"{P}/bin/helper-linux-amd64": b"\x7fELF amd64",
    f"{P}/bin/helper-linux-arm64-v8": b"\x7fELF arm64",
}
EXEC = {p: 0o755 for p in FILES if "/bin/" in p}


def _doc(key: Any, **change: Any) -> dict[str, Any]:
    doc = AppManifest(
        name="demo", version="1.2.0", key_id=bundle.key_id(key.public_key()),
        graph="graphs/demo/graph.json", min_runtime="0.1.0",
        platforms=("linux-arm64-v8", "linux-amd64"),
        packages=(AppPackage(P, "ACME-HELPER-1.0", "1.0", ("linux-arm64-v8", "linux-amd64"),
                             f"{P}/bin/helper"),),
        files=tuple(entries(FILES, EXEC))).as_json()
    doc.update(change)
    return doc


def _bundle(key: Any, doc: dict[str, Any], files: dict[str, bytes] = FILES) -> bytes:
    raw, sig = signed(key, doc)
    members = [(bundle.PAYLOAD + p, d, b"0", "") for p, d in files.items()]
    return raw_bundle(raw, sig, members)


def _ring(key: Any) -> Keyring:
    ring = Keyring()
    ring.add(key.public_key())
    return ring


def test_a_good_bundle_verifies_and_gives_each_platform_its_helper():
    key = new_key()
    manifest = appbundle.read_app_bundle(io.BytesIO(_bundle(key, _doc(key))), _ring(key))
    assert manifest.platforms == ("linux-arm64-v8", "linux-amd64")
    variant = appbundle.platform_variant(manifest, "aarch64")
    assert isinstance(variant, appbundle.Variant)
    assert variant.files[f"{P}/bin/helper"].path == f"{P}/bin/helper-linux-arm64-v8"


REFUSED = [
    ("an OTA manifest", {"format": 1}, "is not edgefleet-app/1"),
    ("platforms the files do not carry", {"platforms": ["*"]}, "are not what the files carry"),
    ("a graph outside the bundle", {"graph": "graphs/other/graph.json"}, "is not a file"),
    ("an unknown platform", {"platforms": ["linux-sparc"]}, "must list platforms"),
    ("a bad runtime version", {"min_runtime": "latest"}, "not dotted numbers"),
]


@pytest.mark.parametrize(("case", "change", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_manifest_refusals(case, change, message):
    key = new_key()
    with pytest.raises(BundleError, match=message):
        appbundle.read_app_bundle(io.BytesIO(_bundle(key, _doc(key, **change))), _ring(key))


def test_a_program_entry_must_be_executable_on_every_platform():
    key = new_key()
    doc = _doc(key, files=[e.as_json() for e in entries(FILES, {
        f"{P}/bin/helper-linux-amd64": 0o755})])
    with pytest.raises(BundleError, match="not executable .* for linux-arm64-v8"):
        appbundle.read_app_bundle(io.BytesIO(_bundle(key, doc)), _ring(key))


def test_an_ota_bundle_is_not_an_application_and_back():
    key = new_key()
    with pytest.raises(BundleError, match="is not edgefleet-app/1"):
        appbundle.read_app_bundle(io.BytesIO(make_bundle(key)), _ring(key))
    with pytest.raises(BundleError, match="format 'edgefleet-app/1' is not 1"):
        bundle.read_bundle(io.BytesIO(_bundle(key, _doc(key))), _ring(key))


def test_the_runtime_version_floor():
    key = new_key()
    manifest = appbundle.read_app_manifest(io.BytesIO(_bundle(key, _doc(key,
                                                                         min_runtime="0.3"))))
    appbundle.check_runtime(manifest, "0.3.0")
    with pytest.raises(BundleError, match="needs runtime 0.3 or newer, this device has 0.2.9"):
        appbundle.check_runtime(manifest, "0.2.9")


def test_damaged_manifests_signed_by_a_trusted_key_are_refused_with_one_line():
    """Signed, so every check past the signature meets the bad values (FLEET_FUZZ_SEED replays)."""
    import random

    from fuzzkit import as_json, encodings, seed, truncations, wrong_types

    key, run_seed = new_key(), seed()
    print(f"FLEET_FUZZ_SEED={run_seed}")
    doc = _doc(key)
    raw, _ = signed(key, doc)
    inputs = [(label, as_json(d)) for label, d in wrong_types(doc, random.Random(run_seed), 150)]
    inputs += encodings(raw.decode()) + truncations(raw)
    broken = []
    for label, data in inputs:
        stream = io.BytesIO(raw_bundle(data, key.sign(data), []))
        try:
            appbundle.read_app_bundle(stream, _ring(key))
        except BundleError as exc:
            if not exc.message or "\n" in exc.message:
                broken.append(f"{label}: {exc.message!r}")
        except Exception as exc:  # noqa: BLE001 - any escape is the failure looked for
            broken.append(f"{label}: {type(exc).__name__}: {exc}")
    assert not broken, f"FLEET_FUZZ_SEED={run_seed}\n" + "\n".join(broken[:20])
