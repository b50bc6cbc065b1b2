"""Where an inventory layer set an application value: file and line, for `fleet app explain`.

Only read when asked (explain names the inventory folder); without one a source
is named by its kind and name alone (``host berlin-01``).

>>> InventoryLines(Path("inventories/lab")).source("host", "berlin-01", "face_blur", "min_score")
'inventories/lab/hosts.yaml:14 (host berlin-01)'                               # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleet.errors import ConfigError

FILES = {"defaults": "defaults.yaml", "group": "groups.yaml", "host": "hosts.yaml"}


class InventoryLines:
    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._docs: dict[str, Any] = {}

    def _doc(self, fname: str) -> Any:
        if fname not in self._docs and self.folder is not None:
            from fleet.schema import load_yaml

            try:
                self._docs[fname] = load_yaml(self.folder / fname)
            except (ConfigError, OSError):
                self._docs[fname] = None
        return self._docs.get(fname)

    def source(self, kind: str, name: str | None, app: str, node: str) -> str:
        """``FILE:LINE (kind name)`` of `node`'s key, or ``kind name`` when unknown."""
        from fleet.schema import _line_of

        label = f"{kind} {name}" if name else kind
        if self.folder is None:
            return label
        fname = FILES[kind]
        path = ([name] if name else []) + ["data", "apps", app, node]
        line = _line_of(self._doc(fname), path) if self._doc(fname) is not None else None
        return f"{self.folder / fname}:{line} ({label})" if line else label
