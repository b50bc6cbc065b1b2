"""Names and versions the device validates refuse a trailing newline ("$" used to accept it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fleet_runtime import bundle, provisioning
from fleet_runtime.bundle import BundleError
from fleet_runtime.manifest import validate_document
from fleet_runtime.provisioning import ProvisioningError

EXAMPLES = Path(__file__).resolve().parents[2] / "runtime" / "examples"
GRAPH = "graphs/color_classifier/graph.json"
DIGEST = "0" * 64


@pytest.mark.parametrize("version", ["1.4.0\n", "1.4.0-rc1\n", "1\n"])
def test_bundle_versions(version: str) -> None:
    with pytest.raises(BundleError, match="bad-version|dotted numbers"):
        bundle.parse_version(version)


@pytest.mark.parametrize(("field", "value"), [("name", "lab-image\n"), ("version", "1.1.0\n"),
                                               ("min_version", "1.0.0\n")])
def test_signed_manifest_fields(field: str, value: str) -> None:
    fields: dict[str, Any] = {"name": "lab-image", "version": "1.1.0", "min_version": "1.0.0"}
    fields[field] = value
    entry = bundle.FileEntry("etc/x", 1, DIGEST)
    with pytest.raises(BundleError):
        bundle.build_manifest(hardware=["h"], arch=["a"], key="k", files=[entry], **fields)


def test_device_names() -> None:
    assert provisioning.check_device_name("dev-1") == "dev-1"
    with pytest.raises(ProvisioningError, match="invalid device name"):
        provisioning.check_device_name("dev-1\n")


def test_ntp_servers() -> None:
    with pytest.raises(ProvisioningError):
        provisioning.validate_network({"ntp": ["pool.ntp.org\n"]})


@pytest.mark.parametrize(("field", "value"), [
    ("device", "dev-1\n"),
    ("ca_fingerprint", f"sha256:{DIGEST}\n"),
])
def test_archive_manifest_fields(field: str, value: str) -> None:
    schema = provisioning.MANIFEST_SCHEMA["properties"][field]
    jsonschema.validate(value.rstrip("\n"), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(value, schema)


def test_archive_member_digests() -> None:
    members = provisioning.MANIFEST_SCHEMA["properties"]["members"]
    digest = members["additionalProperties"]["properties"]["sha256"]
    jsonschema.validate(DIGEST, digest)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(DIGEST + "\n", digest)


def test_release_key_member_names() -> None:
    assert provisioning.RELEASE_KEY_RE.match("release-keys/abc.pub")
    assert not provisioning.RELEASE_KEY_RE.match("release-keys/abc.pub\n")


def _graph() -> dict[str, Any]:
    return dict(json.loads((EXAMPLES / "color_classifier" / GRAPH).read_text()))


@pytest.mark.parametrize("where", ["node", "package", "package-version", "edge"])
def test_application_graph_names(where: str) -> None:
    doc = _graph()
    assert validate_document(doc, "graph", "graph.json") == []
    graph = doc["nodeGraph"]
    if where == "node":
        graph["nodes"][3]["name"] += "\n"
    elif where == "package":
        graph["packages"][0]["name"] += "\n"
    elif where == "package-version":
        graph["packages"][0]["version"] += "\n"
    else:
        graph["edges"][0]["consumer"] += "\n"
    assert validate_document(doc, "graph", "graph.json"), "a name ending in a newline passed"
