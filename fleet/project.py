"""The fleet project: a directory with inventories/, firmware/, certs/, fleet.yaml and .fleet/.

Found from ``--project DIR``, else ``FLEET_PROJECT``, else the current directory.
``fleet.yaml`` is optional; every setting has a default (CONFIG_SCHEMA).

>>> p = Project.locate(None)   # doctest: +SKIP
>>> p.state_dir.name
'.fleet'
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.errors import ConfigError

PROJECT_ENV = "FLEET_PROJECT"

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "inventory": {"type": "string", "default": "lab", "description": "default inventory"},
        "ssh": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "connect_timeout": {"type": "number", "minimum": 0.1, "default": 10},
                "command_timeout": {"type": "number", "minimum": 0.1, "default": 120},
                "keepalive": {"type": "integer", "minimum": 0, "default": 15},
                "username": {"type": "string", "default": "root"},
                "key_file": {"type": "string", "description": "controller private key"},
            },
            "default": {},
        },
        "concurrency": {"type": "integer", "minimum": 1, "default": 20},
        "health": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "disk_warn_pct": {"type": "number", "default": 85},
                "disk_fail_pct": {"type": "number", "default": 95},
                "mem_warn_pct": {"type": "number", "default": 85},
                "mem_fail_pct": {"type": "number", "default": 95},
                "clock_skew_warn_s": {"type": "number", "default": 5},
                "cert_warn_days": {"type": "number", "minimum": 0, "default": 30},
                "min_fps": {"type": "number", "minimum": 0, "default": 0},
                "load_warn_per_cpu": {"type": "number", "minimum": 0, "default": 2.0,
                                      "description": "lab devices share one host: raise it there"},
            },
            "default": {},
        },
        "registry": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "backend": {"enum": ["sqlite", "aws"], "default": "sqlite"},
                "region": {"type": "string", "description": "AWS region (aws backend)"},
                "endpoint_url": {"type": "string", "description": "AWS endpoint override"},
                "group_prefix": {"type": "string", "default": "edgefleet-"},
                "secret_prefix": {"type": "string", "default": "edgefleet/"},
            },
            "default": {"backend": "sqlite"},
        },
        "cameras": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "max_per_app": {"type": "integer", "minimum": 1, "default": 8},
                "max_per_device": {"type": "integer", "minimum": 1, "default": 80},
            },
            "default": {},
        },
        "mqtt": {"type": "object", "default": {}},
        "rollout": {"type": "object", "default": {}},
    },
}


def _defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill jsonschema `default`s into `value`, recursively for objects."""
    if schema.get("type") != "object" or not isinstance(value, dict):
        return value
    out = dict(value)
    for key, sub in schema.get("properties", {}).items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = _defaults(sub, out[key])
    return out


@dataclass
class Project:
    root: Path
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def locate(cls, explicit: Path | str | None = None) -> Project:
        chosen = explicit or os.environ.get(PROJECT_ENV) or Path.cwd()
        root = Path(chosen).expanduser().resolve()
        if not root.is_dir():
            raise ConfigError(
                f"fleet project directory {root} does not exist",
                fix="pass --project DIR or set FLEET_PROJECT to an existing directory",
            )
        return cls(root=root, config=load_config(root / "fleet.yaml"))

    @property
    def state_dir(self) -> Path:
        """``.fleet/``: registry, journals, known_hosts, keys, lab. Created 0700."""
        path = self.root / ".fleet"
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def inventories(self) -> Path:
        return self.root / "inventories"

    @property
    def certs(self) -> Path:
        return self.root / "certs"

    @property
    def firmware(self) -> Path:
        return self.root / "firmware"

    def setting(self, *path: str) -> Any:
        node: Any = self.config
        for key in path:
            node = node[key]
        return node


def load_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        return dict(_defaults(CONFIG_SCHEMA, {}))
    # Only for a file to read: the YAML and schema libraries cost every command ~0.1 s.
    from fleet.schema import load_yaml_validated

    data = load_yaml_validated(path, CONFIG_SCHEMA, empty_ok=True)
    return dict(_defaults(CONFIG_SCHEMA, data or {}))
