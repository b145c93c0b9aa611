"""Store faults an operator must fix: a full disk, a read-only file system, a database out of reach.

SQLite and PostgreSQL report these as driver errors with their own codes and texts. Here each becomes
one ``StoreUnavailable`` whose message names the cause and the fix (never the SQL or the values), and
the engine's ``StoreHealth`` remembers the latest, so ``/readyz`` says "not ready" while the fault
lasts: a balancer then stops sending writes the store cannot take. A fault is remembered for
``FAULT_MEMORY_SECONDS``; after that the next write simply tries again (and records the fault anew if
it is still there), so a store that was fixed becomes ready without a restart. For a SQLite file the
file system is also looked at directly (read-only mount, free space), which needs no write.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from incident_monitor.errors import StoreUnavailable

logger = logging.getLogger("incident_monitor.store")

FaultKind = Literal["disk_full", "read_only", "unreachable", "io_error"]

# How long a fault keeps /readyz false without a newer one (the next write retries after that).
FAULT_MEMORY_SECONDS = 10.0
# Below this much free space a SQLite store is reported full before SQLite itself fails mid-write.
MIN_FREE_BYTES = 1 << 20

# SQLite primary result codes (extended codes keep them in the low byte).
_SQLITE_KINDS: dict[int, FaultKind] = {8: "read_only", 10: "io_error", 13: "disk_full", 14: "unreachable"}
# PostgreSQL SQLSTATEs: disk full, read-only transaction, and the connection classes.
_PG_KINDS: dict[str, FaultKind] = {
    "53100": "disk_full",
    "25006": "read_only",
    "57P01": "unreachable",
    "57P03": "unreachable",
}

_FIXES: dict[FaultKind, str] = {
    "disk_full": "the disk holding {where} is full; free space there, then retry",
    "read_only": "{where} is on a read-only file system or database; make it writable, then retry",
    "unreachable": "the database at {where} cannot be reached or opened; check that it is running and reachable, "
    "then retry",
    "io_error": "reading or writing {where} failed (disk I/O error); check the disk and the file, then retry",
}


def unavailable(kind: FaultKind, where: str) -> StoreUnavailable:
    return StoreUnavailable(kind, f"the monitor's database cannot be used now: {_FIXES[kind].format(where=where)}")


@dataclass(frozen=True)
class StoreFault:
    kind: FaultKind
    message: str
    at: float


def fault_kind(exc: BaseException) -> FaultKind | None:
    """The operator-fixable fault behind a driver error, or None for any other error (a bug, a constraint)."""
    cause: BaseException | None = exc
    while cause is not None:
        orig = cause.orig if isinstance(cause, DBAPIError) else cause
        code = getattr(orig, "sqlite_errorcode", None)
        if isinstance(code, int) and (code & 0xFF) in _SQLITE_KINDS:
            return _SQLITE_KINDS[code & 0xFF]
        sqlstate = getattr(orig, "sqlstate", None)
        if isinstance(sqlstate, str) and (sqlstate in _PG_KINDS or sqlstate.startswith("08")):
            return "unreachable" if sqlstate.startswith("08") else _PG_KINDS[sqlstate]
        if isinstance(cause, DBAPIError) and cause.connection_invalidated:
            return "unreachable"
        if (
            sqlstate is None
            and type(orig).__module__.startswith("psycopg")
            and type(orig).__name__ == "OperationalError"
        ):
            return "unreachable"  # psycopg without a SQLSTATE: the server never answered
        cause = cause.__cause__
    return None


class StoreHealth:
    """The latest fault of one engine's store, and a direct look at a SQLite file's file system."""

    def __init__(self, engine: Engine) -> None:
        self.where = _where(engine)
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        self._directory = Path(database).parent if database and database != ":memory:" else None
        self._lock = threading.Lock()
        self._fault: StoreFault | None = None

    def classify(self, kind: FaultKind) -> FaultKind:
        # What the file system shows is the more precise cause: SQLite says "unable to open" when a
        # read-only mount keeps it from creating its WAL index, and "I/O error" for some full disks.
        observed = self._file_system_problem()
        return observed.kind if observed is not None and kind in ("unreachable", "io_error") else kind

    def record(self, kind: FaultKind) -> StoreUnavailable:
        kind = self.classify(kind)
        error = unavailable(kind, self.where)
        with self._lock:
            new = self._fault is None or self._fault.kind != kind
            self._fault = StoreFault(kind, error.message, time.monotonic())
        if new:  # one line per fault, not one per failed call
            logger.error("store: %s", error.message)
        return error

    def recovered(self) -> None:
        """After a unit of work succeeded: the fault is over, unless the file system still shows it (a read
        or a write that fit in pages SQLite already had can succeed on a full disk)."""
        if self._fault is None:  # the common case, without taking the lock
            return
        if self._file_system_problem() is not None:
            return
        with self._lock:
            was, self._fault = self._fault, None
        if was is not None:
            logger.warning("store: writes succeed again (after %s)", was.kind.replace("_", " "))

    def problem(self) -> StoreFault | None:
        """Why the store cannot take writes now, or None."""
        observed = self._file_system_problem()
        if observed is not None:
            return observed
        with self._lock:
            fault = self._fault
        if fault is not None and time.monotonic() - fault.at < FAULT_MEMORY_SECONDS:
            return fault
        return None

    def _file_system_problem(self) -> StoreFault | None:
        if self._directory is None:
            return None
        try:
            stats = os.statvfs(self._directory)
        except OSError:
            kind: FaultKind = "unreachable"
        else:
            if stats.f_flag & os.ST_RDONLY:
                kind = "read_only"
            elif stats.f_bavail * stats.f_frsize < MIN_FREE_BYTES:
                kind = "disk_full"
            else:
                return None
        return StoreFault(kind, unavailable(kind, self.where).message, time.monotonic())


_health: weakref.WeakKeyDictionary[Engine, StoreHealth] = weakref.WeakKeyDictionary()
_health_lock = threading.Lock()


def store_health(engine: Engine) -> StoreHealth:
    with _health_lock:
        health = _health.get(engine)
        if health is None:
            health = _health[engine] = StoreHealth(engine)
        return health


@contextmanager
def store_faults(engine: Engine, *, remember: bool = True) -> Iterator[None]:
    """Around a unit of work or a read: an operator-fixable driver fault becomes ``StoreUnavailable``.

    ``remember=False`` (opening the store at start-up) raises it without logging or remembering it: the
    caller stops with it as its one line.
    """
    health = store_health(engine)
    try:
        yield
    except StoreUnavailable:
        raise
    except Exception as exc:
        kind = fault_kind(exc)
        if kind is None:
            raise
        if not remember:
            raise unavailable(health.classify(kind), health.where) from exc
        raise health.record(kind) from exc
    else:
        health.recovered()


def _where(engine: Engine) -> str:
    if engine.dialect.name == "sqlite":
        return str(engine.url.database)
    url = engine.url
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"  # never the user or password
