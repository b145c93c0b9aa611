"""Reads of committed data on a few connections kept open, for checks that run on every request.

``store.engine.read_scope`` checks a connection out of the pool and returns it for every read, and the
connection begins and rolls back a transaction each time: ~55 us of CPU for a one-row lookup on SQLite,
where the statement on a connection kept open costs ~19 us. Here up to ``size`` connections stay open in
autocommit mode and never take the write lock (no BEGIN IMMEDIATE, no advisory lock): every statement is
its own snapshot of the latest committed state, so a credential disabled by another process is seen by
the very next read, exactly as with ``read_scope``. A read finding them all busy goes through
``read_scope``: the kept connections never take more of the engine's pool than ``size``. For
single-statement lookups only.

A kept connection that died (the database restarted) is dropped and the read tried once more: a read
changes nothing, so repeating it is safe.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Executable
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.exc import DBAPIError

from incident_monitor.store.engine import READ_ONLY_OPTION, read_scope
from incident_monitor.store.faults import store_faults

# Reads in flight at once on kept connections (a read takes ~20 us; more wait for the GIL, not the database).
KEPT_CONNECTIONS = 4


class PinnedReads:
    """Up to ``size`` read connections on one engine, kept open between reads; ``close`` returns them to the pool."""

    def __init__(self, engine: Engine, size: int = KEPT_CONNECTIONS) -> None:
        self.engine = engine
        self.size = size
        self._lock = threading.Lock()
        self._idle: list[Connection] = []
        self._kept = 0  # open kept connections, idle or in use
        self._closed = False

    def first(self, statement: Executable, parameters: Mapping[str, Any]) -> RowMapping | None:
        """The first row ``statement`` returns (as a mapping), read from the latest committed state."""
        with store_faults(self.engine):
            for attempt in (1, 2):
                connection = self._take()
                if connection is None:
                    return first_committed(self.engine, statement, parameters)
                try:
                    row = connection.execute(statement, parameters).mappings().first()
                except DBAPIError as exc:
                    self._discard(connection)
                    if attempt == 2 or not exc.connection_invalidated:
                        raise
                    continue
                except BaseException:
                    self._discard(connection)  # in an unknown state: never reused
                    raise
                self._give_back(connection)
                return row
            raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._kept -= len(idle)
        for connection in idle:
            connection.close()

    def _take(self) -> Connection | None:
        """An idle kept connection, a new one while fewer than ``size`` are open, else None."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the store's pinned reads were closed")
            if self._idle:
                return self._idle.pop()
            if self._kept >= self.size:
                return None
            self._kept += 1
        try:
            # AUTOCOMMIT: PostgreSQL would otherwise keep a transaction open between reads (idle in transaction);
            # SQLite's connections already run statements in autocommit mode (store.engine's connect hook).
            return self.engine.connect().execution_options(isolation_level="AUTOCOMMIT", **{READ_ONLY_OPTION: True})
        except BaseException:
            with self._lock:
                self._kept -= 1
            raise

    def _give_back(self, connection: Connection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(connection)
                return
            self._kept -= 1
        connection.close()

    def _discard(self, connection: Connection) -> None:
        with self._lock:
            self._kept -= 1
        with contextlib.suppress(Exception):  # already unusable; the pool replaces it
            connection.invalidate()
            connection.close()


def first_committed(
    engine: Engine, statement: Executable, parameters: Mapping[str, Any], reads: PinnedReads | None = None
) -> RowMapping | None:
    """The first row ``statement`` returns from the latest committed state: on ``reads`` (kept connections) when
    given, else on a connection of its own (``read_scope``), outside any unit of work either way."""
    if reads is not None:
        return reads.first(statement, parameters)
    with read_scope(engine) as connection:
        return connection.execute(statement, parameters).mappings().first()
