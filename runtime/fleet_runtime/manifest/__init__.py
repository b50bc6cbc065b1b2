"""Panorama-compatible application formats: graph.json, override.json, package.json and descriptors.

One place knows these formats (both halves import them from here):
``schema`` validates single documents, ``application`` loads and checks a
whole application directory and resolves it into nodes the runner can start.
"""

from fleet_runtime.manifest.application import (
    Application,
    CameraNode,
    CodeNode,
    ManifestError,
    ModelNode,
    load_application,
    validate_application,
)
from fleet_runtime.manifest.schema import Problem, validate_document

__all__ = [
    "Application",
    "CameraNode",
    "CodeNode",
    "ManifestError",
    "ModelNode",
    "Problem",
    "load_application",
    "validate_application",
    "validate_document",
]
