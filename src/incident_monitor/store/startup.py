"""Opening the store: the engine, then its schema brought to this code's revision (or refused).

Opening a database whose stored revision equals ``HEAD_REVISION`` costs one small read and never
imports Alembic (start-up stays fast). An empty database gets today's tables and is stamped at the
head. Anything else (an older revision, or a database from before migrations existed) is upgraded
by ``store.migrate`` under the write lock -- or refused with the command to run, when upgrading was
not allowed.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Engine

from incident_monitor.errors import SchemaOutdated
from incident_monitor.store.engine import PoolOptions, create_store_engine, read_scope, start_group_commit
from incident_monitor.store.faults import store_faults
from incident_monitor.store.schema import HEAD_REVISION, describe, has_tables, stored_revision


def prepare_schema(engine: Engine, *, migrate: bool) -> None:
    """Bring the schema to ``HEAD_REVISION``, or raise ``SchemaOutdated`` naming the command when not allowed."""
    with read_scope(engine, remember_faults=False) as connection:
        revision = stored_revision(connection)
        if revision == HEAD_REVISION:
            return
        tables = has_tables(connection)
    if not migrate:
        raise SchemaOutdated(
            f"the database schema is {describe(revision, tables)}; this version needs revision {HEAD_REVISION}. "
            "Run `incident-monitor db upgrade` (or start serve without --no-migrate)"
        )
    from incident_monitor.store.migrate import upgrade  # Alembic's import cost only when there is work

    upgrade(engine)


def open_engine(
    data_dir: Path, url: str | None = None, *, pool: PoolOptions | None = None, migrate: bool = True
) -> Engine:
    """Open the database and bring its schema to this code's revision (or refuse, when ``migrate`` is false).

    The data directory is created too. Raises ``StoreUnavailable`` naming the fix when the database cannot be
    reached or written (down, a full disk, a read-only file system: store/faults.py) and ``SchemaOutdated`` when
    its schema is behind and ``migrate`` is false.
    """
    engine = create_store_engine(data_dir, url, pool)
    try:
        with store_faults(engine, remember=False):  # at start: one clear error, not a log line as well
            prepare_schema(engine, migrate=migrate)
    except BaseException:
        engine.dispose()
        raise
    start_group_commit(engine)
    return engine
