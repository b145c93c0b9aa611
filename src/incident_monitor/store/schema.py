"""The schema's revision as stored in the database (Alembic's version table), read without Alembic."""

from __future__ import annotations

from sqlalchemy import inspect
from sqlalchemy.engine import Connection

# The newest migration in store/migrations/versions (a test checks they agree).
HEAD_REVISION = "0005_code_change_runs"
VERSION_TABLE = "alembic_version"
# A table every database this code ever wrote has: its presence without a version row means "before migrations".
_FIRST_TABLE = "incidents"


def stored_revision(connection: Connection) -> str | None:
    """The revision stamped in the database, or None when it has none (empty, or from before migrations)."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    row = connection.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").first()  # noqa: S608  (a constant)
    return str(row[0]) if row is not None else None


def has_tables(connection: Connection) -> bool:
    return inspect(connection).has_table(_FIRST_TABLE)


def stamp(connection: Connection, revision: str) -> None:
    """Record ``revision`` the way Alembic does (its version table), without importing Alembic."""
    connection.exec_driver_sql(
        f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} "
        "(version_num VARCHAR(32) NOT NULL, CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
    )
    connection.exec_driver_sql(f"DELETE FROM {VERSION_TABLE}")  # noqa: S608
    connection.exec_driver_sql(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES ('{revision}')")  # noqa: S608


def describe(revision: str | None, tables: bool) -> str:
    if revision is not None:
        return f"at revision {revision}"
    return "from before migrations (no revision stored)" if tables else "empty"
