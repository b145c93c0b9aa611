"""Core statements compiled once per dialect and run straight on the driver's cursor.

What runs on every governed call (intake's statements, the audit append) spends more in SQLAlchemy's
execution machinery (cache lookup, execution context, result set-up, about 20-40 us a statement) than
in SQLite itself. A ``Prepared`` statement is compiled once per dialect, then each call only applies the
same bind processors SQLAlchemy would (JSON to text, datetimes, enums), so the rows stored are identical.
It still goes through ``Connection._cursor_execute``: the engine's cursor events (PostgreSQL's NUL
replacement, store/engine.py) run and a driver error becomes SQLAlchemy's, as for any statement.

Only plain statements qualify: no Python-side defaults SQLAlchemy would compute and bind, no RETURNING,
no expanding IN. Anything else is refused when it is first compiled. (Values SQL computes, like
``count + 1``, are fine: nothing here reads them back.)
"""

from __future__ import annotations

import threading
import weakref
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

_Processor = Callable[[Any], Any]


class NotPreparable(ValueError):
    """The statement needs SQLAlchemy's full execution (defaults, RETURNING, expanding binds)."""


@dataclass(frozen=True)
class _Plan:
    compiled: SQLCompiler
    statement: str
    # Positional drivers (sqlite3): (bind name, processor) in the statement's order.
    positions: tuple[tuple[str, _Processor | None], ...] | None
    # Named drivers (psycopg): bind name -> (name in the SQL, processor).
    names: dict[str, tuple[str, _Processor | None]]
    row: Any  # the namedtuple type of a result row (None: the statement returns no rows)
    result_processors: tuple[_Processor | None, ...]


class Prepared:
    """One Core statement; ``column_keys`` names an INSERT's columns: every call passes exactly those."""

    def __init__(self, statement: ClauseElement, column_keys: Sequence[str] | None = None) -> None:
        self.statement = statement
        self.column_keys = list(column_keys) if column_keys is not None else None
        self._plans: weakref.WeakKeyDictionary[Dialect, _Plan] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    @classmethod
    def insert(cls, table: Table) -> Prepared:
        """An INSERT of one row that names every column (a column left out or one too many is an error)."""
        return cls(insert(table), [column.key for column in table.columns])

    def execute(self, connection: Connection, parameters: Mapping[str, Any] | None = None) -> None:
        """Run a statement that returns no rows (INSERT, UPDATE)."""
        cursor = self._run(self._plan(connection.dialect), connection, parameters)
        cursor.close()

    def first(self, connection: Connection, parameters: Mapping[str, Any] | None = None) -> Any:
        """The first row (a named tuple, values as SQLAlchemy returns them), or None."""
        plan = self._plan(connection.dialect)
        cursor = self._run(plan, connection, parameters)
        try:
            raw = cursor.fetchone()
        finally:
            cursor.close()
        if raw is None:
            return None
        return plan.row._make(
            value if process is None else process(value)
            for value, process in zip(raw, plan.result_processors, strict=True)
        )

    def _run(self, plan: _Plan, connection: Connection, parameters: Mapping[str, Any] | None) -> Any:
        if not connection.in_transaction():
            # The unit of work's BEGIN (and its write lock) comes from SQLAlchemy's begin hook: never bypass it.
            raise RuntimeError("a prepared statement runs only inside a unit of work's transaction")
        if self.column_keys is not None and len(parameters or ()) != len(self.column_keys):
            given, named = set(parameters or ()), set(self.column_keys)
            raise ValueError(
                f"prepared INSERT: no value for {sorted(named - given)}, unknown columns {sorted(given - named)}"
            )
        # Raises for a bind parameter without a value (an INSERT's missing column included).
        values = plan.compiled.construct_params(parameters, escape_names=False)
        arguments: Any
        if plan.positions is not None:
            arguments = tuple(
                values[name] if process is None else process(values[name]) for name, process in plan.positions
            )
        else:
            arguments = {}
            for name, value in values.items():
                shown, process = plan.names[name]
                arguments[shown] = value if process is None else process(value)
        cursor = connection.connection.cursor()
        try:
            connection._cursor_execute(cursor, plan.statement, arguments)
        except BaseException:
            cursor.close()
            raise
        return cursor

    def _plan(self, dialect: Dialect) -> _Plan:
        plan = self._plans.get(dialect)
        if plan is None:
            with self._lock:
                plan = self._plans.get(dialect)
                if plan is None:
                    plan = self._plans[dialect] = self._compile(dialect)
        return plan

    def _compile(self, dialect: Dialect) -> _Plan:
        compiled = self.statement.compile(dialect=dialect, column_keys=self.column_keys)
        assert isinstance(compiled, SQLCompiler)
        if (
            compiled.insert_prefetch
            or compiled.update_prefetch
            or compiled.implicit_returning
            or compiled.returning
            or compiled.literal_execute_params
            or compiled.post_compile_params
            or compiled.schema_translate_map
        ):
            raise NotPreparable(
                f"not a plain statement (Python-side defaults, RETURNING or expanding binds): {compiled}"
            )
        processors: dict[str, _Processor] = {}
        for name, process in compiled._bind_processors.items():
            if not callable(process):  # a tuple type's processors, one per element
                raise NotPreparable(f"bind parameter {name}: a tuple value needs SQLAlchemy's full execution")
            processors[name] = process
        positions = None
        if compiled.positional:
            assert compiled.positiontup is not None
            positions = tuple((name, processors.get(name)) for name in compiled.positiontup)
        escaped: dict[str, str] = dict(compiled.escaped_bind_names or {})
        names = {name: (escaped.get(name, name), processors.get(name)) for name in compiled.bind_names.values()}
        row: Any = None
        result_processors: tuple[_Processor | None, ...] = ()
        if compiled._result_columns:
            keys = [column[0] for column in compiled._result_columns]
            row = namedtuple("Row", keys, rename=True)  # type: ignore[misc,no-redef]
            result_processors = tuple(
                column[3]._cached_result_processor(dialect, None) for column in compiled._result_columns
            )
        return _Plan(compiled, compiled.string, positions, names, row, result_processors)
