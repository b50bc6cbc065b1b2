"""What a device command imports before it reaches a device (#19): every `fleet health`
pays its start-up once, before the first connection, on the controller's critical path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_health_modules_and_a_project_without_fleet_yaml_import_no_schema_libraries(
        tmp_path: Path) -> None:
    """jsonschema and the ruamel-based schema module are for files that need validating:
    a project without fleet.yaml, the health sweep and the CRL lookup need neither."""
    probe = ("import json, sys\n"
             "from pathlib import Path\n"
             "import fleet.health, fleet.pki, fleet.inventory\n"
             "from fleet.project import load_config\n"
             f"config = load_config(Path({str(tmp_path / 'fleet.yaml')!r}))\n"
             "assert config['concurrency'] > 0\n"
             "print(json.dumps([m for m in ('jsonschema', 'fleet.schema') if m in sys.modules]))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == []


def test_the_ssh_transport_loads_paramiko_without_invoke() -> None:
    """paramiko's optional `invoke` (for ssh_config `Match exec`, which fleet never reads)
    was two fifths of paramiko's import; it stays importable for anyone who wants it."""
    probe = ("import json, sys\n"
             "import fleet.transport\n"
             "loaded = 'invoke' in sys.modules\n"
             "import invoke\n"
             "print(json.dumps(loaded))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) is False
