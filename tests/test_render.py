"""Tables keep tokens whole: a bundle path or a timestamp split over two lines cannot be
copied or grepped."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from fleet.cli.application import Application
from fleet.cli.logs import _render
from fleet.logs import Bundle


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
    a = Application(tmp_path, color=False)
    a.out = Console(file=io.StringIO(), width=120, color_system=None)
    a.err = Console(file=io.StringIO(), width=100, color_system=None)
    _render(a, bundles, summary, out)
    text = a.out.file.getvalue()  # type: ignore[attr-defined]
    for token in ("lisbon/lisbon-01-20261202T043412Z.tar.gz", "2026-12-01T04:34:12Z",
                  "2026-12-02T04:34:11Z", "lisbon-03"):
        assert token in text, text
