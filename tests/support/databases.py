"""The suite's two backends: SQLite files (the default pass) and a private PostgreSQL cluster (the second pass).

`make test` runs the suite twice: as is, and with INCIDENT_MONITOR_TEST_DATABASE=postgres, where every test gets
a fresh schema of the cluster through INCIDENT_MONITOR_DATABASE_URL (conftest's ``store_url``). What a test does
behind the service's back (SQL as someone with database access) goes through ``raw_sql``, on either backend.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from incident_monitor.service.monitor import Monitor
from incident_monitor.store.engine import DATABASE_FILENAME, DATABASE_URL_VARIABLE, create_store_engine

ON_POSTGRES = os.environ.get("INCIDENT_MONITOR_TEST_DATABASE", "sqlite") == "postgres"


def database_url_env() -> dict[str, str]:
    """The database URL variable when set (the PostgreSQL pass), for child processes given a minimal environment."""
    url = os.environ.get(DATABASE_URL_VARIABLE)
    return {DATABASE_URL_VARIABLE: url} if url else {}


def schema_url(database_url: str, schema: str) -> str:
    """A URL whose connections work in ``schema`` (a schema per test: CREATE SCHEMA takes milliseconds)."""
    return f"{database_url}?options=-csearch_path%3D{schema}"


@contextmanager
def store_engine(data_dir: Path) -> Iterator[Engine]:
    """The database a CLI or server given ``data_dir`` (and this environment) uses, without opening a monitor."""
    engine = create_store_engine(data_dir, os.environ.get(DATABASE_URL_VARIABLE))
    try:
        yield engine
    finally:
        engine.dispose()


def raw_sql(target: Monitor | Engine | Path, *statements: str | tuple[str, tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Run SQL behind the service's back (as someone with database access would), on either backend.

    Each statement is SQL with ``?`` placeholders, or (SQL, params); one transaction; the last one's rows returned.
    """
    rows: list[tuple[Any, ...]] = []
    with sql_connection(target) as db:
        for statement in statements:
            sql, params = statement if isinstance(statement, tuple) else (statement, ())
            cursor = db.execute(sql, params)
            rows = list(cursor.fetchall()) if cursor.description else []
    return rows


class SqlConnection:
    """A DB-API connection of either backend with SQLite's ``?`` placeholders: ``db.execute(sql, params)``."""

    def __init__(self, raw: Any, dialect: str) -> None:
        self._raw, self._dialect = raw, dialect

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        cursor = self._raw.cursor()
        cursor.execute(sql if self._dialect == "sqlite" else sql.replace("?", "%s"), params)
        return cursor


@contextmanager
def sql_connection(target: Monitor | Engine | Path) -> Iterator[SqlConnection]:
    """Behind the service's back, on either backend: a monitor's database, an engine's, or the one a CLI or server
    given that data directory (and this environment) uses. Committed when the block ends."""
    if isinstance(target, Path):
        with store_engine(target) as engine, sql_connection(engine) as connection:
            yield connection
        return
    engine = target.engine if isinstance(target, Monitor) else target
    raw = engine.raw_connection()
    try:
        yield SqlConnection(raw, engine.dialect.name)
        raw.commit()
    finally:
        raw.close()


def table_names(target: Monitor | Engine | Path) -> list[str]:
    """Every table the database holds."""
    if isinstance(target, Path):
        with store_engine(target) as engine:
            return table_names(engine)
    engine = target.engine if isinstance(target, Monitor) else target
    return inspect(engine).get_table_names()


def rows_text(target: Monitor | Engine | Path, *names: str) -> str:
    """The rows of the named tables (every table when none is named), as text."""
    names = names or tuple(table_names(target))
    with sql_connection(target) as db:
        return "\n".join(repr(db.execute(f'SELECT * FROM "{name}"').fetchall()) for name in names)  # noqa: S608


def stored_bytes(target: Monitor | Path) -> bytes:
    """What the database holds, as bytes: the SQLite file and its WAL (freed pages included), or every row of every
    table on PostgreSQL (its files are the server's)."""
    data_dir = target.data_dir if isinstance(target, Monitor) else target
    files = sorted(data_dir.glob(f"{DATABASE_FILENAME}*"))
    if files:
        return b"".join(path.read_bytes() for path in files)
    return rows_text(target).encode()
