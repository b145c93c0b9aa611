"""The durable floors' one write: a row of JSON text, stored as the governed server stores its rows.

Same engine as the store's (store/engine.py ``create_store_engine``: on SQLite WAL, ``synchronous=FULL``,
BEGIN IMMEDIATE; on PostgreSQL the same pool, timeouts and the write lock's advisory lock at BEGIN), same
group commit (store/group_commit.py: concurrent inserts share one commit, each returns only after it), so
a durable floor pays exactly the commit a governed call pays and nothing of the governance.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, Table, Text, insert
from sqlalchemy.engine import Engine

from incident_monitor.store.engine import create_store_engine
from incident_monitor.store.group_commit import GroupCommit

_METADATA = MetaData()
_ROWS = Table("floor_rows", _METADATA, Column("id", Integer, primary_key=True), Column("body", Text, nullable=False))
_INSERT = insert(_ROWS)


def database_url(target: str) -> str:
    """A URL as given (``postgresql+psycopg://…``), else a SQLite file path."""
    return target if "://" in target else f"sqlite:///{target}"


@dataclass
class DurableLog:
    engine: Engine
    group_commit: GroupCommit

    @classmethod
    @contextmanager
    def open(cls, target: str) -> Iterator[DurableLog]:
        url = database_url(target)
        # The store's engine wants the data directory it keeps its SQLite file in: the file's own, else (a
        # PostgreSQL URL) the working directory, which it only makes sure exists.
        data_dir = Path(target).parent if url.startswith("sqlite") else Path.cwd()
        engine = create_store_engine(data_dir, url)
        _METADATA.create_all(engine)
        log = cls(engine, GroupCommit(engine))
        try:
            yield log
        finally:
            log.group_commit.close()
            engine.dispose()

    def insert(self, body: str) -> None:
        """Returns once the row is committed (synchronously: the fsync is paid here)."""
        with self.group_commit.unit_of_work() as session:
            session.connection().execute(_INSERT, {"body": body})

    def count(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.exec_driver_sql("SELECT count(*) FROM floor_rows").scalar_one())
