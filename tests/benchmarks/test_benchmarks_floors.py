"""The benchmarks' durable floors and the alternation of sides (no timing asserted: only what is stored and
in which order the sides ran)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

from benchmarks.durable_log import DurableLog
from benchmarks.run import Run, alternate


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
