"""JSON schemas of the application formats, and validation that names every error's place.

>>> [str(p) for p in validate_document({"nodeGraph": {}}, "graph", "graph.json")][:1]
["graph.json: $.nodeGraph: 'envelopeVersion' is a required property"]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from referencing import Registry, Resource

# document kind -> schema file in ./schemas
KINDS = {
    "graph": "graph.json",
    "override": "override.json",
    "package": "package.json",
    "runtime": "runtime_descriptor.json",
    "model": "model_descriptor.json",
}


@dataclass(frozen=True, order=True)
class Problem:
    """One validation error: the file, the JSON path inside it, and what is wrong."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}"


def _load(name: str) -> dict[str, Any]:
    text = resources.files("fleet_runtime.manifest").joinpath("schemas").joinpath(name).read_text()
    return dict(json.loads(text))


@cache
def _registry() -> Registry:
    resources_ = [(f"fleet:{name}", Resource.from_contents(_load(name))) for name in KINDS.values()]
    return Registry().with_resources(resources_)


@cache
def validator(kind: str) -> Draft202012Validator:
    """The validator of one document kind (see KINDS)."""
    return Draft202012Validator(_load(KINDS[kind]), registry=_registry())


def validate_document(doc: Any, kind: str, file: str) -> list[Problem]:
    """Every schema error of ``doc`` as a Problem, in document order."""
    errors = sorted(validator(kind).iter_errors(doc), key=lambda e: list(map(str, e.path)))
    return [Problem(file, error.json_path, _message(error)) for error in errors]


def _message(error: Any) -> str:
    if error.validator == "additionalProperties":
        return f"{error.message} (check the spelling)"
    if error.validator == "required" and error.message.startswith("'onnx'"):
        # every Panorama model descriptor lacks it: say what to do
        framework = error.instance.get("framework") if isinstance(error.instance, dict) else None
        model = f"the {framework} model" if isinstance(framework, str) else "the model"
        return (
            f"{error.message}: export {model} to ONNX once and name the .onnx file"
            " (in the model's asset folder) in mlModelDescriptor.onnx.asset"
        )
    return str(error.message)
