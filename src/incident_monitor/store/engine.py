"""Database engine and sessions: a SQLite file in the data directory by default (WAL mode), PostgreSQL by URL.

SQL stays portable (no dialect-specific statements outside the connect and begin hooks). Both backends keep
one rule the services rely on: a unit of work holds the database's one write lock from its first statement
to its commit (SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction-level advisory lock every replica takes),
so read-then-write inside a unit (the audit chain's head, a fingerprint's incident, a draft's state) cannot
race another unit in any process or replica.
"""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Index, event, make_url
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, SQLModel, create_engine

from incident_monitor.domain import code_change as _code_change  # noqa: F401  (registers the table)
from incident_monitor.domain import destination_state as _destination_state  # noqa: F401  (registers the table)
from incident_monitor.domain import log_source_state as _log_source_state  # noqa: F401  (registers the tables)
from incident_monitor.domain import models as _models  # noqa: F401  (registers the tables)
from incident_monitor.domain.models import AuditEvent, Incident, table_of
from incident_monitor.errors import ConfigError
from incident_monitor.store.faults import store_faults
from incident_monitor.store.group_commit import GroupCommit, UnitOfWork

DATABASE_FILENAME = "incident-monitor.sqlite3"
DATABASE_URL_VARIABLE = "INCIDENT_MONITOR_DATABASE_URL"
# pg_advisory_xact_lock key of the write lock every unit of work takes on PostgreSQL ("incmon" + 1).
WRITE_LOCK_KEY = 0x696E636D6F6E01

_group_commits: weakref.WeakKeyDictionary[Engine, GroupCommit] = weakref.WeakKeyDictionary()

# Indexes declared beside the models (they belong to the tables' metadata, so create_all and the migrations'
# schema comparison include them). The first was added before migrations existed: a database from before
# them gets it IF NOT EXISTS before it is stamped at the first revision (store/migrate.py); the second came
# with a migration (0003).
_INCIDENTS = table_of(Incident)
_AUDIT = table_of(AuditEvent)
# list_incidents filtered by status and severity, newest first (a page from 10^6 rows in ms).
INCIDENTS_STATUS_SEVERITY_INDEX = Index(
    "ix_incidents_status_severity_last_seen",
    _INCIDENTS.c.status,
    _INCIDENTS.c.severity,
    _INCIDENTS.c.last_seen_at,
    _INCIDENTS.c.incident_id,
)
# Posture's recent denials (decision = deny, at >= since) without scanning the whole audit log.
AUDIT_DECISION_AT_INDEX = Index("ix_audit_events_decision_at", _AUDIT.c.decision, _AUDIT.c.at)


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


# Marks a read-only connection (``read_scope``, ``store.pinned_reads``): it issues no BEGIN, so each statement
# runs in SQLite's autocommit mode, reading the latest committed state (WAL) without taking or waiting for a lock.
READ_ONLY_OPTION = "incident_monitor_read_only"


def _execute_on_cursor(connection: Connection, statement: str) -> None:
    """A constant statement straight on the driver's cursor: the begin hooks run on every unit of work, and
    ``exec_driver_sql`` costs a whole execution context for them. Cursor events and SQLAlchemy's error
    handling (a dropped connection is marked invalidated) are kept."""
    cursor = connection.connection.cursor()
    try:
        connection._cursor_execute(cursor, statement, ())
    finally:
        cursor.close()


def _begin(connection: Connection) -> None:
    if not connection.get_execution_options().get(READ_ONLY_OPTION, False):
        _execute_on_cursor(connection, "BEGIN IMMEDIATE")


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


def _begin_postgresql(connection: Connection) -> None:
    # Held until commit or rollback; released by the server if this process dies (its socket closes).
    if not connection.get_execution_options().get(READ_ONLY_OPTION, False):
        _execute_on_cursor(connection, f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})")


def _no_nul(value: Any) -> Any:
    return value.replace("\x00", "\ufffd") if isinstance(value, str) and "\x00" in value else value


def _without_nul(
    _connection: Connection, _cursor: Any, statement: str, parameters: Any, _context: Any, _executemany: bool
) -> tuple[str, Any]:
    """PostgreSQL's text cannot hold U+0000 (SQLite's can): a NUL a caller sent in free text is stored as U+FFFD
    instead of failing the whole call. What is hashed into the audit chain never holds one (service/audit_chain.py
    replaces it before hashing), so the chain verifies the same on both backends."""
    if isinstance(parameters, dict):
        return statement, {key: _no_nul(value) for key, value in parameters.items()}
    if isinstance(parameters, list | tuple):
        rows = [
            {key: _no_nul(value) for key, value in row.items()} if isinstance(row, dict) else _no_nul(row)
            for row in parameters
        ]
        return statement, type(parameters)(rows) if isinstance(parameters, tuple) else rows
    return statement, parameters


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / DATABASE_FILENAME).resolve()}"


@dataclass(frozen=True)
class PoolOptions:
    """Connection pool and timeouts (PostgreSQL; SQLite uses one file and its busy timeout)."""

    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout_seconds: float = 30
    connect_timeout_seconds: int = 5
    statement_timeout_ms: int = 30_000


def describe_url(url: str) -> str:
    """The URL without its password: what messages may show."""
    return make_url(url).render_as_string(hide_password=True)


def create_store_engine(data_dir: Path, url: str | None = None, pool: PoolOptions | None = None) -> Engine:
    """An engine with the hooks that make a unit of work hold the write lock; connects nothing yet."""
    # The data directory holds more than the database (telemetry, the token file of `make run`): always made.
    data_dir.mkdir(parents=True, exist_ok=True)
    if url is None or url.startswith("sqlite"):
        engine = create_engine(url or sqlite_url(data_dir), connect_args={"check_same_thread": False, "timeout": 30})
        configure_sqlite(engine)
        return engine
    if not url.startswith("postgresql+psycopg://"):
        raise ConfigError(
            f"database URL {describe_url(url)}: unsupported; use postgresql+psycopg://user@host:port/db, "
            "or leave it unset for the SQLite file in the data directory"
        )
    pool = pool or PoolOptions()
    timeout = pool.statement_timeout_ms
    parsed = make_url(url)
    # Server options given in the URL (e.g. ?options=-csearch_path%3Dmonitor) are kept beside the timeouts (the
    # connect arguments' "options" wins over the URL's; the URL keeps them too, so engine.url names the schema).
    given = parsed.query.get("options", "")
    url_options = given if isinstance(given, str) else " ".join(given)
    engine = create_engine(
        parsed,
        pool_size=pool.pool_size,
        max_overflow=pool.max_overflow,
        pool_timeout=pool.pool_timeout_seconds,
        # A connection the server dropped (restart, failover) is replaced at checkout, not used and failed.
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": pool.connect_timeout_seconds,
            "application_name": "incident-monitor",
            "options": f"{url_options} -c statement_timeout={timeout} -c lock_timeout={timeout} "
            f"-c idle_in_transaction_session_timeout={max(timeout * 2, 60_000)}".strip(),
        },
    )
    # The same one-writer rule as SQLite's BEGIN IMMEDIATE, across every replica sharing the database.
    event.listen(engine, "begin", _begin_postgresql)
    event.listen(engine, "before_cursor_execute", _without_nul, retval=True)
    return engine


def start_group_commit(engine: Engine) -> None:
    """From now on, this process's units of work on ``engine`` share transactions (store/group_commit.py)."""
    _group_commits[engine] = GroupCommit(engine)


def create_pre_migration_indexes(connection: Connection) -> None:
    """What the first revision has beyond the tables, for a database written before migrations existed."""
    INCIDENTS_STATUS_SEVERITY_INDEX.create(connection, checkfirst=True)


def create_all(connection: Connection) -> None:
    """Today's schema on an empty database (the migrations' head, stamped by the caller)."""
    SQLModel.metadata.create_all(connection)  # the indexes above included: they are on the tables


@contextmanager
def read_scope(engine: Engine, *, remember_faults: bool = True) -> Iterator[Connection]:
    """A read of committed data outside any unit of work, for what runs on every request (credentials).

    A unit of work takes the write lock, so a read in one waits behind every write in progress; here
    the read sees the latest committed state (a disabled key or revoked token is refused at once)
    without waiting. A connection for Core statements (the ORM would double the cost of a lookup that
    runs per request), each statement its own snapshot: for single-statement lookups only.
    ``remember_faults=False``: opening the store (a fault is the caller's one error line: store/faults.py).
    """
    with store_faults(engine, remember=remember_faults), engine.connect() as connection:
        yield connection.execution_options(**{READ_ONLY_OPTION: True})


def dispose_engine(engine: Engine) -> None:
    """Close the engine's connections, the group commit's own included."""
    group_commit = _group_commits.pop(engine, None)
    if group_commit is not None:
        group_commit.close()
    engine.dispose()


@contextmanager
def unit_scope(engine: Engine) -> Iterator[UnitOfWork]:
    """One unit of work, for Core statements (``connection()``) and, when needed, the ORM (``session``): durable
    when the block ends, rolled back on any error. What every governed call runs in (service/governed.py)."""
    group_commit = _group_commits.get(engine)
    if group_commit is not None:
        with store_faults(engine), group_commit.unit() as unit:
            yield unit
        return
    with store_faults(engine), engine.connect() as connection:
        transaction = connection.begin()
        unit = UnitOfWork(connection, savepoint=False)
        try:
            yield unit
            unit.commit()
            transaction.commit()
        except BaseException:
            try:
                unit.rollback()
            finally:
                if transaction.is_active:
                    transaction.rollback()
            raise
        finally:
            unit.close()


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
