"""Rollout policy: how a change moves across a selection of devices.

Declared once (POLICY_SCHEMA), validated at the edge with jsonschema, from a
YAML file, from the ``rollout:`` section of fleet.yaml, or from CLI flags.
Errors name the location (``policy.yaml:4: $.batches[1]: ...`` or
``--batches``). Later sources override earlier ones field by field.

>>> p = Policy.from_mapping({"batches": [1, "10%", "50%"], "max_fail_percentage": 20})
>>> p.batches, p.max_fail_percentage, p.offline
((1, '10%', '50%'), 20.0, 'skip')
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from fleet.errors import ConfigError
from fleet.schema import json_path, load_yaml, schema_errors

BatchSize = int | str
PERCENT = re.compile(r"^[0-9]+%\Z")
DIGITS = re.compile(r"[0-9]+")  # str.isdigit() also takes "²", which int() refuses
BATCH_HINT = "is not a device count (0 or more) or a percentage like '10%'"
ORDERS = ("inventory", "site-by-site", "shuffle")
OFFLINE = ("skip", "fail", "wait")

POLICY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "batches": {
            "description": "Ansible `serial`: sizes or 'N%' of the whole selection; "
                           "the last repeats",
            "type": "array",
            "minItems": 1,
            "items": {
                "anyOf": [
                    {"type": "integer", "minimum": 0},
                    {"type": "string", "pattern": PERCENT.pattern},
                ]
            },
        },
        "max_fail_percentage": {
            "description": "stop when a batch's failed share EXCEEDS this; unset: stop only "
            "when a whole batch fails (Ansible's default)",
            "type": ["number", "null"], "minimum": 0, "maximum": 100,
        },
        "max_failures": {
            "description": "stop once this many devices have failed in the whole run",
            "type": ["integer", "null"], "minimum": 1,
        },
        "concurrency": {"type": "integer", "minimum": 1},
        "per_site_concurrency": {"type": ["integer", "null"], "minimum": 1},
        "order": {"enum": list(ORDERS)},
        "seed": {"type": "integer", "description": "shuffle seed (order: shuffle)"},
        "canary_tags": {
            "type": "array", "items": {"type": "string", "minLength": 1},
            "description": "devices with any of these tags go first",
        },
        "offline": {"enum": list(OFFLINE)},
        "offline_wait": {"type": "number", "exclusiveMinimum": 0,
                         "description": "seconds to wait for an offline device (offline: wait)"},
        "device_timeout": {"type": "number", "exclusiveMinimum": 0,
                           "description": "seconds before a device still in progress fails"},
        "pause_after_batch": {"type": "boolean"},
    },
}


@dataclass(frozen=True)
class Policy:
    """A validated rollout policy. Defaults are Ansible's where Ansible has the field."""

    batches: tuple[BatchSize, ...] = ("100%",)
    max_fail_percentage: float | None = None
    max_failures: int | None = None
    concurrency: int = 10
    per_site_concurrency: int | None = None
    order: str = "inventory"
    seed: int = 0
    canary_tags: tuple[str, ...] = ()
    offline: str = "skip"
    offline_wait: float = 300.0
    device_timeout: float = 1800.0
    pause_after_batch: bool = False

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str = "policy",
                     base: Policy | None = None) -> Policy:
        """Validate `data` and lay it over `base` (defaults when None)."""
        validate(data, where)
        fields = {k: _frozen(v) for k, v in data.items()}
        if "max_fail_percentage" in fields and fields["max_fail_percentage"] is not None:
            fields["max_fail_percentage"] = float(fields["max_fail_percentage"])
        return dataclasses.replace(base or cls(), **fields)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (journal header, --json)."""
        out = dataclasses.asdict(self)
        out["batches"], out["canary_tags"] = list(self.batches), list(self.canary_tags)
        return out


def _frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def validate(data: Any, where: str, *, show_path: bool = True) -> None:
    """Raise ConfigError naming `where` and the JSON path of the first problem."""
    validator = jsonschema.Draft202012Validator(POLICY_SCHEMA)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.path)))
    if errors:
        err = errors[0]
        path = f" {json_path(list(err.absolute_path))}:" if show_path else ""
        raise ConfigError(f"{where}:{path} {_message(err)}",
                          fix="see `fleet ota rollout --help` for the policy fields")


def _message(err: jsonschema.ValidationError) -> str:
    if err.validator == "anyOf" and list(err.absolute_path)[:1] == ["batches"]:
        return f"{err.instance!r} {BATCH_HINT}"
    return str(err.message)


def load_policy(path: Path, base: Policy | None = None) -> Policy:
    """Read a policy YAML file; errors carry file:line and the JSON path."""
    doc = load_yaml(path)
    problems = schema_errors(doc, POLICY_SCHEMA, path) if doc is not None else []
    if problems:
        first = problems[0].replace("is not valid under any of the given schemas", BATCH_HINT)
        raise ConfigError(first, fix="correct the file and run again")
    return Policy.from_mapping(dict(doc or {}), where=str(path), base=base)


def parse_batches(text: str) -> list[BatchSize]:
    """``"1,10%,50%"`` -> ``[1, "10%", "50%"]`` (the --batches flag)."""
    out: list[BatchSize] = []
    for item in (part.strip() for part in text.split(",")):
        if PERCENT.match(item):
            out.append(item)
        elif DIGITS.fullmatch(item):
            out.append(int(item))
        else:
            raise ConfigError(f"--batches: {item!r} is not a device count or a percentage",
                              fix="write e.g. --batches 1,10%,50%")
    return out


def from_flags(base: Policy, flags: Mapping[str, Any]) -> Policy:
    """Lay CLI flags (None = not given) over `base`; validated like a file."""
    given = {k: v for k, v in flags.items() if v is not None}
    if isinstance(given.get("batches"), str):
        given["batches"] = parse_batches(given["batches"])
    if "canary_tags" in given:
        given["canary_tags"] = list(given["canary_tags"])
    for key, value in given.items():
        validate({key: value}, "--" + key.replace("_", "-"), show_path=False)
    return Policy.from_mapping(given, where="command-line flags", base=base)


def resolve(project_rollout: Mapping[str, Any], policy_file: Path | None,
            flags: Mapping[str, Any]) -> Policy:
    """defaults < fleet.yaml `rollout:` < --policy FILE < flags."""
    policy = Policy.from_mapping(project_rollout, where="fleet.yaml: rollout")
    if policy_file is not None:
        policy = load_policy(policy_file, base=policy)
    return from_flags(policy, flags)
