"""Operations come from the project (playbooks/operations/*.py) and from the entry point group
``edgefleet.operations`` of an installed package; one that fails to import is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from labkit import run_cli
from playkit import write_inventory, write_playbook

from fleet.play import operations
from fleet.play.discovery import discover
from fleet.project import Project

PACKAGE_OP = '''
from fleet.play.operations import Outcome, operation

@operation("acme.hello")
def hello(ctx, *, who: str) -> Outcome:
    return Outcome(data={"greeting": "hello " + who})
'''


def _install_package(site: Path) -> None:
    """A distribution on sys.path with an entry point, as `pip install` leaves it."""
    (site / "acme_ops.py").write_text(PACKAGE_OP)
    info = site / "acme_ops-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-ops\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[edgefleet.operations]\nacme = acme_ops\n")


def test_entry_point_operation_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "site").mkdir()
    _install_package(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    loaded = discover(Project.locate(tmp_path))
    assert "entry point acme" in loaded
    op = operations.find("acme.hello")
    assert list(op.params) == ["who"] and op.params["who"].annotation is str


def test_project_file_that_fails_to_import_is_refused(tmp_path: Path) -> None:
    write_inventory(tmp_path, {"berlin": 1})
    folder = tmp_path / "playbooks" / "operations"
    folder.mkdir(parents=True)
    (folder / "broken.py").write_text("import no_such_module_here\n")
    book = write_playbook(tmp_path, "- name: p\n  hosts: all\n  tasks: []\n")
    result = run_cli(tmp_path, "play", str(book), "-i", "lab")
    assert result.exit_code == 2
    assert "broken.py failed to import: ModuleNotFoundError" in result.stderr
