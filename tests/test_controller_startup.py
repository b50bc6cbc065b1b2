"""What a device command imports before it reaches a device (#19): every `fleet health`
pays its start-up once, before the first connection, on the controller's critical path."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _printed(probe: str) -> str:
    """What `probe` prints, run in a fresh interpreter (so its imports are its own)."""
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout


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
    out = _printed(probe)
    assert json.loads(out) == []


def test_the_ssh_transport_loads_paramiko_without_invoke() -> None:
    """paramiko's optional `invoke` (for ssh_config `Match exec`, which fleet never reads)
    was two fifths of paramiko's import; it stays importable for anyone who wants it."""
    probe = ("import json, sys\n"
             "import fleet.transport\n"
             "loaded = 'invoke' in sys.modules\n"
             "import invoke\n"
             "print(json.dumps(loaded))\n")
    out = _printed(probe)
    assert json.loads(out) is False


def test_loading_an_inventory_loads_no_other_packages_nornir_plugins(tmp_path: Path) -> None:
    """Nornir's InitNornir imports every plugin any installed package declares (three scans
    of all package metadata) before it builds anything; fleet builds its Nornir from its own
    plugins, so an unrelated plugin beside it is never imported."""
    site = tmp_path / "site"
    dist = site / "other_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: other-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[nornir.plugins.runners]\nother = other_runner:Runner\n"
                                           "[nornir.plugins.connections]\n"
                                           "other = other_runner:Connection\n")
    (site / "other_runner.py").write_text("Runner = Connection = object\n")
    shutil.copytree(REPO / "inventories/example", tmp_path / "project/inventories/example")
    probe = ("import json, sys\n"
             f"sys.path.insert(0, {str(site)!r})\n"
             "from fleet import inventory\n"
             "from fleet.project import Project\n"
             f"nr = inventory.load(Project.locate({str(tmp_path / 'project')!r}), 'example',\n"
             "                    num_workers=3)\n"
             "print(json.dumps([len(nr.inventory.hosts), nr.runner.num_workers,\n"
             "                  'other_runner' in sys.modules]))\n")
    out = _printed(probe)
    hosts, workers, other_loaded = json.loads(out)
    assert hosts > 0 and workers == 3
    assert other_loaded is False


def test_a_sweep_of_devices_without_certificates_reads_no_crl(tmp_path: Path) -> None:
    """The CRL lookup needs the fleet's PKI code and cryptography's x509; with no device
    certificate in the answers there is nothing to look up, and neither is imported."""
    probe = ("import json, sys\n"
             "from fleet.health import DeviceHealth, apply_revocations\n"
             "from fleet.project import Project\n"
             "cert = {'name': 'certificate', 'status': 'ok', 'reason': '', 'present': False}\n"
             "reports = [DeviceHealth('dev1', 'berlin', 'healthy', checks=[cert]),\n"
             "           DeviceHealth('dev2', 'berlin', 'unreachable', 'no route')]\n"
             f"apply_revocations(Project.locate({str(tmp_path)!r}), reports)\n"
             "print(json.dumps([[r.verdict for r in reports],\n"
             "                  [m for m in ('fleet.pki', 'cryptography.x509') if m in sys.modules]]))\n")
    out = _printed(probe)
    assert json.loads(out) == [["healthy", "unreachable"], []]


def test_a_command_builds_and_imports_only_its_own_subcommand(tmp_path: Path) -> None:
    """Building every subcommand's options was a third of each command's start-up; a run
    that names its subcommand gets only that one, with the same help and usage."""
    probe = ("import json, sys\n"
             "from fleet.cli.main import main\n"
             f"sys.argv = ['fleet', '--project', {str(tmp_path)!r}, '--no-color', 'health',\n"
             "            '--help']\n"
             "try:\n"
             "    main()\n"
             "except SystemExit as exc:\n"
             "    code = exc.code\n"
             "others = [m for m in ('fleet.cli.ota', 'fleet.cli.play', 'fleet.cli.inventory')\n"
             "          if m in sys.modules]\n"
             "sys.stderr.write(json.dumps([code, others]))\n")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    assert json.loads(run.stderr) == [0, []]
    assert "Usage: fleet health [OPTIONS]" in run.stdout and "--concurrency" in run.stdout


def test_the_subcommand_is_found_past_the_root_options() -> None:
    from fleet.cli.main import subcommand_of

    assert subcommand_of(["--project", "health", "--no-color", "inventory", "list"]) == "inventory"
    assert subcommand_of(["--project=p", "health", "-i", "lab"]) == "health"
    assert subcommand_of(["--help"]) is None and subcommand_of(["helth"]) is None
