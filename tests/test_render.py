"""Tables keep tokens whole: a bundle path or a timestamp split over two lines cannot be
copied or grepped."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

from labkit import run_cli
from rich.console import Console

from fleet.cli.context import CliContext
from fleet.cli.logs import _render
from fleet.logs import Bundle

REPO = Path(__file__).resolve().parents[1]


def test_logs_export_table_never_splits_file_names_or_timestamps(tmp_path: Path) -> None:
    out = tmp_path / "logs"
    bundles = [
        Bundle(device=f"lisbon-0{i}", site="lisbon",
               path=out / "lisbon" / f"lisbon-0{i}-20261202T043412Z.tar.gz",
               bytes=48_213, log_bytes=210_000, files=7,
               time_range={"start": "2026-12-01T04:34:12Z", "end": "2026-12-02T04:34:11Z"})
        for i in (1, 2)
    ]
    bundles.append(Bundle(device="lisbon-03", site="lisbon", unreachable=True,
                          error="cannot connect to 127.0.0.1:40211: connection refused; "
                                "is the device on? check `fleet lab status`"))
    summary = {"exported": 2, "devices": 3, "bytes": 96_426, "log_bytes": 420_000,
               "unreachable": ["lisbon-03"], "failed": []}
    a = CliContext(tmp_path, color=False)
    a.out = Console(file=io.StringIO(), width=120, color_system=None)
    a.err = Console(file=io.StringIO(), width=100, color_system=None)
    _render(a, bundles, summary, out)
    text = a.out.file.getvalue()  # type: ignore[attr-defined]
    for token in ("lisbon/lisbon-01-20261202T043412Z.tar.gz", "2026-12-01T04:34:12Z",
                  "2026-12-02T04:34:11Z", "lisbon-03"):
        assert token in text, text


def test_device_tables_keep_serials_addresses_and_times_whole_at_80_columns(
        tmp_path: Path) -> None:
    # An 80-column terminal (or a pipe) split "EF1A2749/34CB" and "2026-12-0/2T06:01:3/3Z".
    shutil.copytree(REPO / "inventories" / "example", tmp_path / "inventories" / "example")
    listed = run_cli(tmp_path, "inventory", "list", "-i", "example", env={"COLUMNS": "80"})
    assert listed.exit_code == 0, listed.stderr
    for token in ("10.20.0.11:22", "EFHH00000011", "jetson-xavier-nx"):
        assert token in listed.stdout, listed.stdout
    registered = run_cli(tmp_path, "devices", "register", "-i", "example", "--no-contact")
    assert registered.exit_code == 0, registered.stderr
    devices = run_cli(tmp_path, "devices", "list", env={"COLUMNS": "80"})
    assert devices.exit_code == 0, devices.stderr
    assert "EFHH00000011" in devices.stdout, devices.stdout
