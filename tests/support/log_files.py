"""Reading what the log tailer stored, on either backend."""

from __future__ import annotations

from pathlib import Path

from support.databases import rows_text


def database_text_at(data_dir: Path) -> str:
    """Every row of every table, as text (the database a server given ``data_dir`` uses)."""
    return rows_text(data_dir)
