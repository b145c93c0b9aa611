"""Reading what the log tailer stored, through either the database or its file."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def database_text_at(data_dir: Path) -> str:
    """Every row of every table, as text."""
    with sqlite3.connect(data_dir / "incident-monitor.sqlite3") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(str(row) for t in tables for row in db.execute(f"SELECT * FROM {t}"))  # noqa: S608
