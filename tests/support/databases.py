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

from sqlalchemy.engine import Engine

from incident_monitor.service.monitor import Monitor
from incident_monitor.store.engine import DATABASE_URL_VARIABLE, create_store_engine

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


def raw_sql(target: Monitor | Engine, *statements: str | tuple[str, tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Run SQL behind the service's back (as someone with database access would), on either backend.

    Each statement is SQL with ``?`` placeholders, or (SQL, params); one transaction; the last one's rows returned.
    """
    engine = target.engine if isinstance(target, Monitor) else target
    connection = engine.raw_connection()
    rows: list[tuple[Any, ...]] = []
    try:
        cursor = connection.cursor()
        for statement in statements:
            sql, params = statement if isinstance(statement, tuple) else (statement, ())
            if engine.dialect.name != "sqlite":
                sql = sql.replace("?", "%s")
            cursor.execute(sql, params)
            rows = list(cursor.fetchall()) if cursor.description else []
        connection.commit()
    finally:
        connection.close()
    return rows
