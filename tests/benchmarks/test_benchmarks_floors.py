"""The benchmarks' durable floors and the alternation of sides (no timing asserted: only what is stored and
in which order the sides ran)."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from benchmarks.durable_log import DurableLog
from benchmarks.run import Run, alternate
from benchmarks.stores import SQLITE, Store
from sqlalchemy import text

from incident_monitor.store.engine import DATABASE_URL_VARIABLE, WRITE_LOCK_KEY
from support.paths import ROOT


def test_the_durable_floor_stores_each_row_with_the_stores_durability(tmp_path: Path) -> None:
    path = tmp_path / "floor.sqlite3"
    with DurableLog.open(str(path)) as log:
        for i in range(3):
            log.insert(f'{{"i": {i}}}')
        assert log.count() == 3
        with log.engine.connect() as connection:
            # The store's settings on every connection: WAL and synchronous=FULL (2).
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2
    # Committed, not merely written: another connection sees every row after the log is closed.
    db = sqlite3.connect(path)
    try:
        assert [row[0] for row in db.execute("SELECT body FROM floor_rows ORDER BY id")] == [
            '{"i": 0}',
            '{"i": 1}',
            '{"i": 2}',
        ]
    finally:
        db.close()


@pytest.mark.postgres_only
def test_the_durable_floor_on_postgresql_commits_each_row_under_the_stores_write_lock(store_url: str) -> None:
    with DurableLog.open(store_url) as log:
        # The store's engine: every unit takes the write lock (the advisory lock) at BEGIN, as a governed call does.
        with log.group_commit.unit_of_work() as session:
            held = session.connection().execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                    "AND ((classid::bigint << 32) | objid::bigint) = :key"
                ),
                {"key": WRITE_LOCK_KEY},
            )
            assert held.scalar_one() == 1
        for i in range(3):
            log.insert(f'{{"i": {i}}}')
        assert log.count() == 3
    # Committed: a new log on the same database sees them.
    with DurableLog.open(store_url) as log:
        assert log.count() == 3


def test_a_benchmark_store_sets_the_database_url_of_its_servers() -> None:
    caller = {DATABASE_URL_VARIABLE: "postgresql+psycopg://someone@elsewhere/db", "PATH": "/bin"}
    # The SQLite rows never inherit a caller's database URL; a PostgreSQL store's servers and floor share its database.
    assert SQLITE.env(caller) == {"PATH": "/bin"}
    assert SQLITE.durable_target("/tmp/floor.sqlite3") == "/tmp/floor.sqlite3"
    url = "postgresql+psycopg://postgres@127.0.0.1:5432/bench_1"
    store = Store(" (PostgreSQL)", "-pg", url)
    assert store.env(caller) == {DATABASE_URL_VARIABLE: url, "PATH": "/bin"}
    assert store.durable_target("/tmp/floor.sqlite3") == url


def test_sides_take_turns_in_rotated_order_and_every_call_is_counted() -> None:
    order: list[tuple[str, str]] = []

    def side(name: str) -> Callable[[str, int], Awaitable[Run]]:
        async def calls(tag: str, n: int) -> Run:
            order.append((name, tag))
            return [0.001] * n, 0.01

        return calls

    runs = asyncio.run(alternate({"a": side("a"), "b": side("b"), "c": side("c")}, total=30, rounds=3))
    assert order == [
        ("a", "r0"), ("b", "r0"), ("c", "r0"),
        ("b", "r1"), ("c", "r1"), ("a", "r1"),
        ("c", "r2"), ("a", "r2"), ("b", "r2"),
    ]  # fmt: skip
    assert {name: len(latencies) for name, (latencies, _) in runs.items()} == {"a": 30, "b": 30, "c": 30}
    assert all(abs(wall - 0.03) < 1e-9 for _, wall in runs.values())


def test_the_no_op_stdio_floor_imports_nothing_of_the_store() -> None:
    # The cold-start floor is a no-op MCP server: SQLAlchemy and the store's models (~250 ms of a start) are the
    # governed server's cost, so the floor must not pay for them too (it did while it imported the durable log).
    started = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "benchmarks.floors", "noop-stdio"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in started.stderr.splitlines() if line.startswith("import time:")
    }
    assert "mcp.server" in imported, started.stderr[-2000:]  # the floor did start
    assert not {"sqlalchemy", "sqlmodel", "benchmarks.durable_log", "incident_monitor.store.engine"} & imported
