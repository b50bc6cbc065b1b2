"""The registry's ``history`` table: every change, appended; it outlives its subjects."""

from __future__ import annotations

import json
import time
from typing import Any

from fleet.registry.sqlite_db import Database, iso

INSERT = "INSERT INTO history(at, subject, kind, event, detail) VALUES (?, ?, ?, ?, ?)"


class History:
    """Append inside the caller's transaction; read newest first."""

    def __init__(self, db: Database):
        self.db = db

    def log(self, subject: str, kind: str, event: str, **detail: Any) -> None:
        self.db.conn.execute(
            INSERT, (time.time(), subject, kind, event, json.dumps(detail, sort_keys=True))
        )

    def log_many(self, rows: list[tuple[float, str, str, str, str]]) -> None:
        """``(at, subject, kind, event, detail JSON)`` rows, in one statement (big imports)."""
        self.db.conn.executemany(INSERT, rows)

    def recent(self, subject: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first: ``{"at", "subject", "kind", "event", "detail"}``."""
        where, args = ("WHERE subject = ?", (subject,)) if subject else ("", ())
        rows = self.db.rows(
            f"SELECT at, subject, kind, event, detail FROM history {where} "  # noqa: S608
            "ORDER BY id DESC LIMIT ?",
            (*args, limit),
        )
        return [
            {"at": iso(at), "subject": s, "kind": k, "event": e, "detail": json.loads(d)}
            for at, s, k, e, d in rows
        ]
