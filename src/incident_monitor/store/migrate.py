"""Schema migrations (Alembic, in store/migrations): upgrade, current and history.

An upgrade runs in one transaction that holds the database's write lock (SQLite: BEGIN IMMEDIATE;
PostgreSQL: the advisory lock every unit of work takes), so replicas starting together migrate once:
the first does the work, the others wait, then find the head already stamped. Both backends run DDL
inside a transaction, so a failed upgrade leaves the previous schema and every row as they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection, Engine

from incident_monitor.store.engine import create_all, create_pre_migration_indexes, read_scope
from incident_monitor.store.schema import (
    HEAD_REVISION,
    has_tables,
    stamp,
    stored_revision,
)

if TYPE_CHECKING:
    from alembic.config import Config

# The first revision is the schema as it stood before migrations existed.
BASE_REVISION = "0001_initial"


@dataclass(frozen=True)
class Revision:
    revision: str
    down_revision: str | None
    description: str


@dataclass(frozen=True)
class UpgradeResult:
    before: str | None
    after: str
    created: bool  # an empty database got today's tables

    @property
    def changed(self) -> bool:
        return self.before != self.after


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resources.files("incident_monitor.store") / "migrations"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> UpgradeResult:
    """Bring the database to ``revision`` (default: this code's head) under the write lock; no row is dropped."""
    with engine.begin() as connection:  # the begin hook takes the write lock
        # Read again under the lock: another process may have migrated while we waited for it.
        before = stored_revision(connection)
        if before == HEAD_REVISION and revision == "head":
            return UpgradeResult(before, before, created=False)
        if before is None and not has_tables(connection) and revision == "head":
            create_all(connection)
            stamp(connection, HEAD_REVISION)
            return UpgradeResult(None, HEAD_REVISION, created=True)
        if before is None:
            # Written before migrations: that schema is the first revision (indexes added since then included).
            create_pre_migration_indexes(connection)
            stamp(connection, BASE_REVISION)
        from alembic import command

        command.upgrade(alembic_config(connection), revision)
        after = stored_revision(connection)
        assert after is not None
        return UpgradeResult(before, after, created=False)


def current(engine: Engine) -> str | None:
    """The revision stored in the database (None: empty, or from before migrations)."""
    with read_scope(engine) as connection:
        return stored_revision(connection)


def is_current(engine: Engine) -> bool:
    return current(engine) == HEAD_REVISION


def history() -> list[Revision]:
    """Every revision, oldest first."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    revisions = [
        Revision(str(r.revision), str(r.down_revision) if r.down_revision else None, r.doc or "")
        for r in script.walk_revisions()
    ]
    return list(reversed(revisions))
