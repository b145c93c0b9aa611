"""Reads of committed data on a connection each thread keeps open, for checks that run on every request.

``store.engine.read_scope`` checks a connection out of the pool and returns it for every read, and the
connection begins and rolls back a transaction each time: ~55 us of CPU for a one-row lookup on SQLite,
where the statement on a connection kept open costs ~19 us. Here each thread keeps one connection in
autocommit mode that never takes the write lock (no BEGIN IMMEDIATE, no advisory lock): every statement
is its own snapshot of the latest committed state, so a credential disabled by another process is seen
by the very next read, exactly as with ``read_scope``. For single-statement lookups only.

A connection that died (the database restarted) is dropped and the read tried once more on a new one:
a read changes nothing, so repeating it is safe.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Executable
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.exc import DBAPIError

from incident_monitor.store.engine import _READ_ONLY
from incident_monitor.store.faults import store_faults


class PinnedReads:
    """One read connection per thread that uses it, on one engine; ``close`` returns them all to the pool."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[Connection] = []
        self._closed = False

    def first(self, statement: Executable, parameters: Mapping[str, Any]) -> RowMapping | None:
        """The first row ``statement`` returns (as a mapping), read from the latest committed state."""
        with store_faults(self.engine):
            for attempt in (1, 2):
                connection = self._connection()
                try:
                    return connection.execute(statement, parameters).mappings().first()
                except DBAPIError as exc:
                    self._drop(connection)
                    if attempt == 2 or not exc.connection_invalidated:
                        raise
            raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._open = self._open, []
        for connection in connections:
            connection.close()

    def _connection(self) -> Connection:
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is None or connection.closed:
            # AUTOCOMMIT: PostgreSQL would otherwise keep a transaction open between reads (idle in transaction);
            # SQLite's connections already run statements in autocommit mode (store.engine's connect hook).
            connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT", **{_READ_ONLY: True})
            with self._lock:
                if self._closed:
                    connection.close()
                    raise RuntimeError("the store's pinned reads were closed")
                self._open.append(connection)
            self._local.connection = connection
        return connection

    def _drop(self, connection: Connection) -> None:
        self._local.connection = None
        with self._lock:
            if connection in self._open:
                self._open.remove(connection)
        with contextlib.suppress(Exception):  # already unusable; the pool replaces it
            connection.invalidate()
            connection.close()
