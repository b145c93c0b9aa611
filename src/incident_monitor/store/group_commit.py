"""Group commit: the units of work of concurrent threads share one transaction and one commit.

Every unit of work takes SQLite's write lock (BEGIN IMMEDIATE) and ends with a synchronous
commit (an fsync), so units are serialised anyway and the fsync bounds their rate. When other
threads are already queued behind a unit, it hands the open transaction on instead of
committing: each unit runs in its own SAVEPOINT (an error rolls back that unit alone), the last
unit of the batch commits once for all, and every unit returns only after that commit completed
(or raises if it failed), so nothing is acknowledged before it is durable. A lone unit commits at
once, exactly as a plain transaction would.

On PostgreSQL the same holds with the advisory lock every unit takes at BEGIN (store/engine.py) in
place of BEGIN IMMEDIATE: one process's units share a transaction and a commit, and replicas take
turns holding the lock batch by batch.

Queueing on a Python lock, rather than SQLite's busy handler (which sleeps 5-25 ms per retry),
also keeps this process's threads out of each other's way; other processes (the CLI) still wait
on SQLite's lock with busy_timeout.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy.engine import Connection, Engine, NestedTransaction, RootTransaction
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

# Bounds how long the first unit of a batch waits for its commit when threads keep arriving.
MAX_UNITS_PER_COMMIT = 32


class BatchCommitFailed(RuntimeError):
    """The shared transaction this unit of work was part of could not commit: nothing of it is stored."""


@dataclass
class _Batch:
    connection: Connection
    transaction: RootTransaction
    units: int = 0
    ended: bool = False  # rolled back by its only unit: nothing to commit, nobody may join
    broken: bool = False
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def wait_durable(self) -> None:
        self.done.wait()
        if self.error is not None:
            raise BatchCommitFailed(f"the transaction was not committed: {self.error}") from self.error


class UnitOfWork:
    """One unit's share of the transaction: Core statements on ``connection()``, the ORM on ``session``.

    The session is made on first use: a report (service/intake.py) and the audit append run Core statements
    only, and an ORM session joined, committed and closed per unit cost about as much as their statements.
    Either way the unit's effects are in its savepoint (or, for a batch's first unit, the batch's transaction),
    which the unit of work alone releases or rolls back.
    """

    def __init__(self, connection: Connection, *, savepoint: bool) -> None:
        self._connection = connection
        self._wants_savepoint = savepoint
        self._savepoint: NestedTransaction | None = None
        self._session: Session | None = None

    def connection(self) -> Connection:
        if self._wants_savepoint and self._savepoint is None:
            self._savepoint = self._connection.begin_nested()
        return self._connection

    @property
    def session(self) -> Session:
        if self._session is None:
            # "rollback_only": the session joins the unit's transaction (its savepoint, if any) and never commits
            # it (the unit of work does); its rollback undoes what it joined, as the unit's rollback would.
            self._session = Session(
                bind=self.connection(), join_transaction_mode="rollback_only", expire_on_commit=False
            )
        return self._session

    def commit(self) -> None:
        if self._session is not None:
            self._session.commit()  # flushes; the transaction stays the unit's
        if self._savepoint is not None and self._savepoint.is_active:
            self._savepoint.commit()

    def rollback(self) -> None:
        if self._session is not None:
            self._session.rollback()
        if self._savepoint is not None and self._savepoint.is_active:
            self._savepoint.rollback()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()


class GroupCommit:
    """One per engine; every unit of work of this process goes through it, on one connection."""

    def __init__(self, engine: Engine, max_units: int = MAX_UNITS_PER_COMMIT) -> None:
        self.engine = engine
        self.max_units = max_units
        self._turn = threading.Lock()  # held by the thread whose unit of work is running
        self._state = threading.Lock()  # guards _waiting and _batch
        self._waiting = 0
        self._batch: _Batch | None = None
        self._owner: int | None = None
        # Units run one at a time, so one connection serves them all (no pool round trip per unit).
        self._connection: Connection | None = None
        self.commits = 0  # how many commits served the units (tests read it)

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        with self.unit() as unit:
            yield unit.session

    @contextmanager
    def unit(self) -> Iterator[UnitOfWork]:
        if self._owner == threading.get_ident():
            # Nested in a unit of this thread: a savepoint inside it, durable when the outer one is.
            assert self._batch is not None
            with self._unit(self._batch, savepoint=True) as unit:
                yield unit
            return
        batch = self._take_turn()
        try:
            # The first unit needs no savepoint: if it fails, the transaction holds nothing else.
            with self._unit(batch, savepoint=batch.units > 1) as unit:
                yield unit
        finally:
            self._end_turn(batch)
        batch.wait_durable()

    def close(self) -> None:
        with self._turn:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _take_turn(self) -> _Batch:
        with self._state:
            self._waiting += 1
        self._turn.acquire()
        try:
            with self._state:
                self._waiting -= 1
                if self._batch is None:
                    self._batch = self._begin_batch()
                batch = self._batch
            batch.units += 1
            self._owner = threading.get_ident()
            return batch
        except BaseException:
            # BEGIN failed (the server went away, the lock timed out): never reuse that connection.
            self._drop_connection()
            self._turn.release()
            raise

    def _begin_batch(self) -> _Batch:
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = self.engine.connect()
            try:
                # BEGIN IMMEDIATE, or the advisory lock on PostgreSQL (the engine's begin hook): the write lock
                # for the whole batch.
                return _Batch(self._connection, self._connection.begin())
            except DBAPIError as exc:
                # The connection kept between batches died (the database restarted): no unit ran yet, so
                # beginning again on a fresh (pre-pinged) pool connection is safe.
                self._drop_connection()
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")

    def _drop_connection(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            with contextlib.suppress(Exception):  # already unusable; the pool replaces it
                connection.invalidate()
                connection.close()

    @contextmanager
    def _unit(self, batch: _Batch, *, savepoint: bool) -> Iterator[UnitOfWork]:
        # Savepoint: commit releases it (durable with the batch), rollback undoes this unit alone.
        # Otherwise the unit is the batch's first: commit leaves the transaction to the batch,
        # rollback ends the whole transaction (it holds nothing else; _end_turn rolls it back if still open).
        unit = UnitOfWork(batch.connection, savepoint=savepoint)
        try:
            yield unit
            unit.commit()
        except BaseException:
            try:
                unit.rollback()
            except BaseException:
                batch.broken = True  # the transaction is in an unknown state: commit none of it
                raise
            if not savepoint:
                batch.ended = True
            raise
        finally:
            unit.close()

    def _end_turn(self, batch: _Batch) -> None:
        with self._state:
            hand_on = not (batch.ended or batch.broken) and self._waiting > 0 and batch.units < self.max_units
            if not hand_on:
                self._batch = None
        self._owner = None
        if hand_on:
            self._turn.release()
            return
        try:
            if batch.broken:
                batch.error = RuntimeError("a unit of work left the transaction in an unknown state")
                batch.transaction.rollback()
            elif not batch.ended:
                batch.transaction.commit()
            elif batch.transaction.is_active:
                # Its only unit failed without touching its session, which left the transaction open.
                batch.transaction.rollback()
        except BaseException as exc:
            batch.error = exc
        finally:
            try:
                if batch.error is not None:
                    # Whatever state a failed commit left the connection in, it must not be reused.
                    self._connection = None
                    batch.connection.invalidate()
                    batch.connection.close()
            finally:
                self.commits += 1
                batch.done.set()
                self._turn.release()
