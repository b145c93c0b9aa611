"""Pinned reads (store/pinned_reads.py): a few read connections kept open, and every read on them still sees
the latest committed state, never waits for the write lock, survives a dead connection, and never takes more
of the pool than its size."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, event, text
from sqlalchemy.engine import Engine

from incident_monitor.store.engine import DATABASE_URL_VARIABLE, dispose_engine
from incident_monitor.store.pinned_reads import PinnedReads
from incident_monitor.store.startup import open_engine

NOTE = text("SELECT who FROM notes WHERE n = :n").bindparams(bindparam("n"))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_engine(tmp_path, os.environ.get(DATABASE_URL_VARIABLE))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE notes (n INTEGER PRIMARY KEY, who TEXT NOT NULL)"))
    yield engine
    dispose_engine(engine)


@pytest.fixture
def checkouts(engine: Engine) -> list[Any]:
    """The DBAPI connection of every pool checkout, in order."""
    taken: list[Any] = []
    event.listen(engine, "checkout", lambda dbapi_connection, _record, _proxy: taken.append(dbapi_connection))
    return taken


def write(engine: Engine, sql: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql))


def who(reads: PinnedReads, n: int) -> str | None:
    row = reads.first(NOTE, {"n": n})
    return None if row is None else str(row["who"])


def test_every_read_sees_what_was_committed_since_on_the_same_open_connection(
    engine: Engine, checkouts: list[Any]
) -> None:
    reads = PinnedReads(engine)
    try:
        assert who(reads, 1) is None
        write(engine, "INSERT INTO notes (n, who) VALUES (1, 'first')")
        assert who(reads, 1) == "first"
        write(engine, "UPDATE notes SET who = 'disabled' WHERE n = 1")
        assert who(reads, 1) == "disabled"
        # The reads' connection was checked out once and kept open; the writes never got it.
        assert checkouts.count(checkouts[0]) == 1
    finally:
        reads.close()


def test_a_read_answers_while_a_writer_holds_the_write_lock_and_sees_only_committed_rows(engine: Engine) -> None:
    write(engine, "INSERT INTO notes (n, who) VALUES (1, 'committed')")
    reads = PinnedReads(engine)
    held, release = threading.Event(), threading.Event()

    def writer() -> None:
        # engine.begin() takes the write lock (BEGIN IMMEDIATE, or the advisory lock on PostgreSQL).
        with engine.begin() as conn:
            conn.execute(text("UPDATE notes SET who = 'uncommitted' WHERE n = 1"))
            held.set()
            release.wait(30)

    thread = threading.Thread(target=writer)
    thread.start()
    seen: list[str | None] = []
    try:
        assert held.wait(30)
        reader = threading.Thread(target=lambda: seen.append(who(reads, 1)))
        reader.start()
        reader.join(20)
        assert not reader.is_alive(), "the read waited for the write lock"
    finally:
        release.set()
        thread.join()
        reads.close()
    assert seen == ["committed"]


def test_a_dead_connection_is_replaced_and_the_read_made_again(engine: Engine, checkouts: list[Any]) -> None:
    write(engine, "INSERT INTO notes (n, who) VALUES (1, 'kept')")
    reads = PinnedReads(engine)
    try:
        assert who(reads, 1) == "kept"
        checkouts[0].close()  # the database went away under the open connection
        assert who(reads, 1) == "kept"
        assert checkouts[-1] is not checkouts[0]
    finally:
        reads.close()


def test_a_read_finding_the_kept_connections_busy_uses_the_pool_and_close_returns_the_kept_ones(
    engine: Engine,
) -> None:
    write(engine, "INSERT INTO notes (n, who) VALUES (1, 'shared')")
    reads = PinnedReads(engine, size=1)
    before = engine.pool.checkedout()  # type: ignore[attr-defined]
    inside, release = threading.Event(), threading.Event()

    def hold_the_slow_read(*_: Any) -> None:
        if threading.current_thread().name == "slow-reader":
            inside.set()
            release.wait(30)

    event.listen(engine, "before_cursor_execute", hold_the_slow_read)
    seen: list[str | None] = []
    slow = threading.Thread(target=lambda: seen.append(who(reads, 1)), name="slow-reader")
    slow.start()
    try:
        assert inside.wait(30)
        # The one kept connection is busy: this read takes a pool connection and gives it back.
        assert who(reads, 1) == "shared"
        assert engine.pool.checkedout() == before + 1  # type: ignore[attr-defined]
    finally:
        release.set()
        slow.join()
    assert seen == ["shared"]
    assert engine.pool.checkedout() == before + 1  # type: ignore[attr-defined]  (the kept one, idle)
    reads.close()
    assert engine.pool.checkedout() == before  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="closed"):
        who(reads, 1)
