"""An application's console output (``print``, tracebacks it prints itself).

On the appliance each application was its own container and its stdout and
stderr went to its ``console_output`` log. Here the code runs inside the
runtime, whose stdout carries the run summary (JSON that scripts parse), so
:func:`capture` sends the process's ``sys.stdout`` and ``sys.stderr`` to the
application's ``console_output.log`` (beside its ``/opt/aws/panorama/logs``
files, which ``fleet logs export`` collects) and, for whoever watches the
terminal or the journal, to the runtime's stderr. The runtime keeps the real
stdout for its own output. The file is kept under ``MAX_BYTES`` by rotation,
like the appliance's log files, since apps print per frame.
"""

from __future__ import annotations

import io
import os
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

NAME = "console_output.log"
MAX_BYTES = 10_000_000
BACKUPS = 2


class _RotatingFile:
    """Append-only text file that moves itself to ``.1`` (``.2``, ...) past ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
        self.path, self.max_bytes, self.backups = path, max_bytes, backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8", errors="replace")

    def write(self, text: str) -> None:
        self._file.write(text)
        if self._file.tell() >= self.max_bytes:
            self._rotate()

    def flush(self) -> None:
        self._file.flush()

    def _rotate(self) -> None:
        self._file.close()
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._file = self.path.open("a", encoding="utf-8", errors="replace")


class _Tee(io.TextIOBase):
    """A text stream that writes to the console file and to the runtime's stderr."""

    def __init__(self, file: _RotatingFile, echo: TextIO) -> None:
        self._file, self._echo = file, echo
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: Any) -> int:
        text = str(text)
        with self._lock:
            self._file.write(text)
            self._echo.write(text)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._file.flush()
            self._echo.flush()

    def isatty(self) -> bool:
        return False


_saved: list[tuple[TextIO, TextIO]] = []


def capture(logs_dir: Path) -> tuple[TextIO, TextIO]:
    """Route ``print`` and ``sys.stderr`` writes to ``logs_dir/console_output.log``.

    Returns the real (stdout, stderr), for the runtime's own output: threads the
    application started may still print after the runtime stopped its nodes.
    Once per process.
    """
    if not _saved:
        _saved.append((sys.stdout, sys.stderr))
        file = _RotatingFile(logs_dir / NAME)
        sys.stdout = sys.stderr = _Tee(file, sys.stderr)
    return _saved[0]


def release() -> None:
    """Put the real stdout and stderr back (and flush the console file)."""
    if _saved:
        sys.stdout.flush()
        sys.stdout, sys.stderr = _saved.pop()
