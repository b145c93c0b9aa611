"""Database engine and sessions: a SQLite file in the data directory by default (WAL mode).

SQL stays portable (no SQLite-only statements outside the connect hook) so PostgreSQL can follow.
"""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Index, event, inspect
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, SQLModel, create_engine

from incident_monitor.domain import code_change as _code_change  # noqa: F401  (registers the table)
from incident_monitor.domain import destination_state as _destination_state  # noqa: F401  (registers the table)
from incident_monitor.domain import log_source_state as _log_source_state  # noqa: F401  (registers the tables)
from incident_monitor.domain import models as _models  # noqa: F401  (registers the tables)
from incident_monitor.domain.models import AuditEvent, Incident, table_of
from incident_monitor.store.faults import store_faults
from incident_monitor.store.group_commit import GroupCommit

DATABASE_FILENAME = "incident-monitor.sqlite3"

_group_commits: weakref.WeakKeyDictionary[Engine, GroupCommit] = weakref.WeakKeyDictionary()

# Indexes added after the first release: create_all only creates missing tables, so these are
# created IF NOT EXISTS at every open and older databases get them too.
_INCIDENTS = table_of(Incident)
_AUDIT = table_of(AuditEvent)
_LATER_INDEXES = (
    # Posture's recent denials (decision = deny, at >= since) without scanning the whole audit log.
    Index("ix_audit_events_decision_at", _AUDIT.c.decision, _AUDIT.c.at),
    # list_incidents filtered by status and severity, newest first (a page from 10^6 rows in ms).
    Index(
        "ix_incidents_status_severity_last_seen",
        _INCIDENTS.c.status,
        _INCIDENTS.c.severity,
        _INCIDENTS.c.last_seen_at,
        _INCIDENTS.c.incident_id,
    ),
)


# Columns added after the first release (create_all leaves existing tables alone): (table, column, SQL type).
_LATER_COLUMNS = (
    ("audit_events", "key_id", "VARCHAR"),
    ("audit_events", "mac", "VARCHAR"),
)


def _add_later_columns(connection: Connection) -> None:
    present = {
        (table, column["name"]) for table, _, _ in _LATER_COLUMNS for column in inspect(connection).get_columns(table)
    }
    for table, column, sql_type in _LATER_COLUMNS:
        if (table, column) not in present:
            connection.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")


def _sqlite_pragmas(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # Let SQLAlchemy's "begin" hook own transactions (pysqlite's implicit BEGIN is deferred).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL is durable in WAL mode except on power loss mid-checkpoint; FULL for acknowledged reports.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


# Marks a connection of ``read_scope``: it issues no BEGIN, so each statement runs in SQLite's
# autocommit mode, reading the latest committed state (WAL) without taking or waiting for a lock.
_READ_ONLY = "incident_monitor_read_only"


def _begin(connection: Connection) -> None:
    if not connection.get_execution_options().get(_READ_ONLY, False):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def configure_sqlite(engine: Engine) -> None:
    """The store's durability and locking on a SQLite engine: WAL, ``synchronous=FULL``, BEGIN IMMEDIATE.

    Also what the benchmarks' durable floors use (benchmarks/floors.py), so they pay the same fsync.
    """
    if engine.dialect.name != "sqlite":
        return
    event.listen(engine, "connect", _sqlite_pragmas)
    # BEGIN IMMEDIATE takes the write lock up front, so the server and the CLI writing at once
    # wait for each other (busy_timeout) instead of failing on a stale snapshot, and the audit
    # chain's "read last hash, append" is serialised across processes.
    event.listen(engine, "begin", _begin)


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / DATABASE_FILENAME).resolve()}"


def open_engine(data_dir: Path, url: str | None = None) -> Engine:
    """Open (and create if needed) the database; the data directory is created too."""
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url or sqlite_url(data_dir), connect_args={"check_same_thread": False, "timeout": 30})
    configure_sqlite(engine)
    with store_faults(engine, remember=False):  # a full disk or read-only file system at start: one clear error
        SQLModel.metadata.create_all(engine)
        with engine.begin() as connection:
            for index in _LATER_INDEXES:
                index.create(connection, checkfirst=True)
            _add_later_columns(connection)
    _group_commits[engine] = GroupCommit(engine)
    return engine


@contextmanager
def read_scope(engine: Engine) -> Iterator[Connection]:
    """A read of committed data outside any unit of work, for what runs on every request (credentials).

    A unit of work takes the write lock, so a read in one waits behind every write in progress; here
    the read sees the latest committed state (a disabled key or revoked token is refused at once)
    without waiting. A connection for Core statements (the ORM would double the cost of a lookup that
    runs per request), each statement its own snapshot: for single-statement lookups only.
    """
    with store_faults(engine), engine.connect() as connection:
        yield connection.execution_options(**{_READ_ONLY: True})


def dispose_engine(engine: Engine) -> None:
    """Close the engine's connections, the group commit's own included."""
    group_commit = _group_commits.pop(engine, None)
    if group_commit is not None:
        group_commit.close()
    engine.dispose()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One unit of work: durable when the block ends (its commit has completed), rolled back on any error."""
    group_commit = _group_commits.get(engine)
    if group_commit is not None:
        with store_faults(engine), group_commit.unit_of_work() as session:
            yield session
        return
    with store_faults(engine), Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
