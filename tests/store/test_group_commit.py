"""Group commit (store/group_commit.py): concurrent units of work share one transaction and one commit,
each unit isolated in a savepoint, and none returns before the commit that makes it durable."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from incident_monitor.store.engine import create_store_engine, dispose_engine, session_scope, unit_scope
from incident_monitor.store.group_commit import BatchCommitFailed, GroupCommit
from incident_monitor.store.startup import open_engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_engine(tmp_path)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE notes (n INTEGER PRIMARY KEY, who TEXT NOT NULL)"))
    yield engine
    dispose_engine(engine)


def stored(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [row.who for row in conn.execute(text("SELECT who FROM notes ORDER BY n"))]


def group_commit_of(engine: Engine) -> GroupCommit:
    from incident_monitor.store.engine import _group_commits

    return _group_commits[engine]


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def run_batch(
    engine: Engine, units: dict[str, Callable[[], None] | None], *, core: bool = False
) -> dict[str, BaseException | None]:
    """The first unit holds its turn until every other unit queued behind it, so all of them form one batch.

    ``core``: each unit inserts through its Core connection (``unit_scope``), never making an ORM session."""
    group = group_commit_of(engine)
    release_first = threading.Event()
    outcomes: dict[str, BaseException | None] = {}
    names = list(units)

    def unit(name: str) -> None:
        try:
            with unit_scope(engine) as unit:
                insert = text("INSERT INTO notes (who) VALUES (:who)")
                if core:
                    unit.connection().execute(insert, {"who": name})
                else:
                    unit.session.execute(insert, {"who": name})
                if name == names[0]:
                    release_first.wait(10)
                extra = units[name]
                if extra is not None:
                    extra()
            outcomes[name] = None
        except BaseException as exc:
            outcomes[name] = exc

    first = threading.Thread(target=unit, args=(names[0],))
    first.start()
    wait_until(lambda: group._owner is not None)
    others = [threading.Thread(target=unit, args=(name,)) for name in names[1:]]
    for t in others:
        t.start()
    wait_until(lambda: group._waiting == len(others))
    release_first.set()
    for t in [first, *others]:
        t.join(10)
    return outcomes


def test_queued_units_share_one_commit_and_all_are_stored(engine: Engine) -> None:
    group = group_commit_of(engine)
    commits_before = group.commits
    outcomes = run_batch(engine, {f"unit-{i}": None for i in range(6)})
    assert outcomes == {f"unit-{i}": None for i in range(6)}
    assert group.commits - commits_before == 1
    assert sorted(stored(engine)) == sorted(f"unit-{i}" for i in range(6))


def test_a_lone_unit_commits_at_once(engine: Engine) -> None:
    group = group_commit_of(engine)
    before = group.commits
    with session_scope(engine) as session:
        session.execute(text("INSERT INTO notes (who) VALUES ('alone')"))
    assert group.commits == before + 1
    assert stored(engine) == ["alone"]


def test_a_failing_unit_is_rolled_back_alone(engine: Engine) -> None:
    def fail() -> None:
        raise ValueError("this unit fails")

    outcomes = run_batch(engine, {"first": None, "bad": fail, "good": None})
    assert isinstance(outcomes["bad"], ValueError)
    assert outcomes["first"] is None and outcomes["good"] is None
    assert sorted(stored(engine)) == ["first", "good"]


def test_a_failing_first_unit_leaves_the_rest_of_its_batch_intact(engine: Engine) -> None:
    def fail() -> None:
        raise ValueError("the first unit fails")

    outcomes = run_batch(engine, {"first": fail, "second": None, "third": None})
    assert isinstance(outcomes["first"], ValueError)
    assert sorted(stored(engine)) == ["second", "third"]


def test_no_unit_returns_before_the_commit_and_a_failed_commit_fails_every_unit(engine: Engine) -> None:
    order: list[str] = []
    failing = {"on": True}

    def on_commit(_conn: object) -> None:
        order.append("commit")
        if failing["on"]:
            raise OSError("disk full")

    event.listen(engine, "commit", on_commit)
    outcomes = run_batch(engine, {"a": None, "b": None, "c": None})
    assert all(isinstance(outcomes[n], BatchCommitFailed) for n in "abc"), outcomes
    assert "disk full" in str(outcomes["a"])
    assert stored(engine) == []  # nothing half-stored, nothing acknowledged

    failing["on"] = False
    order.clear()
    returned: list[str] = []

    def note_return(name: str) -> Callable[[], None]:
        return lambda: returned.append(f"inside {name}")

    outcomes = run_batch(engine, {"a": note_return("a"), "b": note_return("b")})
    assert outcomes == {"a": None, "b": None}
    # Both units finished their work before the single commit; neither returned before it.
    assert order == ["commit"] and len(returned) == 2


def test_a_nested_unit_in_the_same_thread_joins_the_outer_one(engine: Engine) -> None:
    with session_scope(engine) as outer:
        outer.execute(text("INSERT INTO notes (who) VALUES ('outer')"))
        with session_scope(engine) as inner:
            inner.execute(text("INSERT INTO notes (who) VALUES ('inner')"))
    assert stored(engine) == ["outer", "inner"]


def test_a_unit_that_fails_before_touching_its_session_leaves_the_next_one_working(engine: Engine) -> None:
    with pytest.raises(ValueError), session_scope(engine):
        raise ValueError("refused before any statement")
    with session_scope(engine) as session:
        session.execute(text("INSERT INTO notes (who) VALUES ('next')"))
    assert stored(engine) == ["next"]


@pytest.mark.parametrize("failing", ["first", "middle"])
def test_core_only_units_share_a_commit_and_a_failing_one_is_rolled_back_alone(engine: Engine, failing: str) -> None:
    def fail() -> None:
        raise ValueError("this unit fails")

    group = group_commit_of(engine)
    before = group.commits
    units: dict[str, Callable[[], None] | None] = {"first": None, "middle": None, "last": None}
    units[failing] = fail
    outcomes = run_batch(engine, units, core=True)
    assert isinstance(outcomes[failing], ValueError)
    # A failing first unit ends its batch (the transaction held nothing else); the others then share one.
    assert group.commits == before + (2 if failing == "first" else 1)
    assert sorted(stored(engine)) == sorted(name for name in units if name != failing)


def test_a_unit_using_core_and_the_orm_keeps_or_undoes_both_together(engine: Engine) -> None:
    def both_then_fail() -> None:
        with unit_scope(engine) as unit:  # nested in the first unit: its own savepoint
            unit.connection().execute(text("INSERT INTO notes (who) VALUES ('core')"))
            unit.session.execute(text("INSERT INTO notes (who) VALUES ('orm')"))
            raise ValueError("undo both")

    with unit_scope(engine) as unit:
        unit.session.execute(text("INSERT INTO notes (who) VALUES ('orm-kept')"))
        unit.connection().execute(text("INSERT INTO notes (who) VALUES ('core-kept')"))
        with pytest.raises(ValueError):
            both_then_fail()
    assert stored(engine) == ["orm-kept", "core-kept"]


def test_a_unit_without_group_commit_commits_core_and_orm_or_neither(tmp_path: Path) -> None:
    engine = create_store_engine(tmp_path)  # no group commit started: a transaction of its own per unit
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE notes (n INTEGER PRIMARY KEY, who TEXT NOT NULL)"))
        with pytest.raises(ValueError), unit_scope(engine) as unit:
            unit.connection().execute(text("INSERT INTO notes (who) VALUES ('undone')"))
            raise ValueError("rolled back")
        with unit_scope(engine) as unit:
            unit.connection().execute(text("INSERT INTO notes (who) VALUES ('core')"))
            unit.session.execute(text("INSERT INTO notes (who) VALUES ('orm')"))
        assert stored(engine) == ["core", "orm"]
    finally:
        dispose_engine(engine)
