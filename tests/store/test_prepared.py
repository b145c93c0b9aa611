"""Prepared statements (store/prepared.py) store and read exactly what SQLAlchemy's own execution does."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import bindparam, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from incident_monitor.domain.enums import IncidentStatus, Severity
from incident_monitor.domain.models import Incident, IncidentOccurrence, table_of
from incident_monitor.store.prepared import NotPreparable, Prepared
from support.monitors import MonitorFactory, flow_config

_INCIDENTS = table_of(Incident)
_OCCURRENCES = table_of(IncidentOccurrence)
_AT = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)


def _incident(incident_id: str, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "incident_id": incident_id,
        "fingerprint": f"project:shop|fp_{incident_id}",
        "title": "Checkout failed — naïve ünïcode",
        "detail": "line 1\nline 2",
        "source": "ci",
        "event": "ci.failed",
        "level": "error",
        "severity": Severity.high,
        "status": IncidentStatus.open,
        "risk_category": None,
        "risk_level": Severity.critical,
        "project_id": None,
        "route_tags": ["payments", "web"],
        "evidence_refs": [],
        "context": {"step": 3, "nested": {"a": [1, None, "x"]}, "unicode": "é"},
        "occurrence_count": 1,
        "recurrence_count": 0,
        "reported_by": "agent",
        "first_seen_at": _AT,
        "last_seen_at": _AT,
        "resolved_at": None,
        "resolved_by": None,
        "resolution_note": None,
        "last_run_id": "run-1",
        "last_session_id": None,
    }
    return row | changes


def _stored(connection: Connection, table: str, key: str, value: str) -> tuple[Any, ...]:
    # The driver's own view of the row (on SQLite: the text as stored), no SQLAlchemy type processing.
    marker = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    cursor = connection.exec_driver_sql(f"SELECT * FROM {table} WHERE {key} = {marker}", (value,))  # noqa: S608
    row = cursor.fetchone()
    assert row is not None
    return tuple(row)


def test_an_insert_stores_the_same_row_as_sqlalchemys_execution(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config())
    with monitor.session() as session:
        connection = session.connection()
        connection.execute(insert(_INCIDENTS), _incident("inc_core"))
        Prepared.insert(_INCIDENTS).execute(connection, _incident("inc_prepared"))
        for incident_id in ("inc_core", "inc_prepared"):
            occurrence = {
                "occurrence_id": f"occ_{incident_id}",
                "incident_id": incident_id,
                "seen_at": _AT,
                "reported_by": "agent",
                "run_id": None,
                "session_id": "s-1",
                "detail_digest": "sha256:00",
                "recurrence": True,
            }
            if incident_id == "inc_core":
                connection.execute(insert(_OCCURRENCES), occurrence)
            else:
                Prepared.insert(_OCCURRENCES).execute(connection, occurrence)
        core = _stored(connection, "incidents", "incident_id", "inc_core")
        prepared = _stored(connection, "incidents", "incident_id", "inc_prepared")
        assert prepared[2:] == core[2:]  # all but the id and the fingerprint, byte for byte on SQLite
        core_occurrence = _stored(connection, "incident_occurrences", "occurrence_id", "occ_inc_core")
        prepared_occurrence = _stored(connection, "incident_occurrences", "occurrence_id", "occ_inc_prepared")
        assert prepared_occurrence[2:] == core_occurrence[2:]


def test_a_select_returns_the_values_sqlalchemy_returns(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config())
    statement = select(
        _INCIDENTS.c.incident_id,
        _INCIDENTS.c.status,
        _INCIDENTS.c.severity,
        _INCIDENTS.c.risk_level,
        _INCIDENTS.c.route_tags,
        _INCIDENTS.c.context,
        _INCIDENTS.c.last_seen_at,
        _INCIDENTS.c.resolved_at,
        _INCIDENTS.c.occurrence_count,
    ).where(_INCIDENTS.c.incident_id == bindparam("incident_id"))
    prepared = Prepared(statement)
    with monitor.session() as session:
        connection = session.connection()
        Prepared.insert(_INCIDENTS).execute(connection, _incident("inc_1"))
        expected = connection.execute(statement, {"incident_id": "inc_1"}).first()
        found = prepared.first(connection, {"incident_id": "inc_1"})
        assert prepared.first(connection, {"incident_id": "inc_missing"}) is None
    assert expected is not None and found is not None
    assert tuple(found) == tuple(expected)
    assert found.status is IncidentStatus.open and found.severity is Severity.high
    assert found.last_seen_at == _AT and found.last_seen_at.tzinfo is not None
    assert found._asdict() == expected._asdict()


def test_an_insert_must_name_every_column_exactly(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config())
    prepared = Prepared.insert(_INCIDENTS)
    with monitor.session() as session:
        connection = session.connection()
        missing = _incident("inc_1")
        del missing["last_session_id"]
        with pytest.raises(Exception, match="last_session_id"):
            prepared.execute(connection, missing)
        with pytest.raises(ValueError, match="unknown_column"):
            prepared.execute(connection, _incident("inc_2", unknown_column=1))


def test_a_driver_error_is_sqlalchemys_and_leaves_the_unit_of_work_to_roll_back(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config())
    with pytest.raises(IntegrityError), monitor.session() as session:
        connection = session.connection()
        Prepared.insert(_INCIDENTS).execute(connection, _incident("inc_1"))
        Prepared.insert(_INCIDENTS).execute(connection, _incident("inc_1"))  # the same primary key
    with monitor.session() as session:
        assert session.get(Incident, "inc_1") is None  # the whole unit rolled back


def test_statements_that_need_sqlalchemys_full_execution_are_refused(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config())
    expanding = Prepared(select(_INCIDENTS.c.incident_id).where(_INCIDENTS.c.status.in_([IncidentStatus.open])))
    returning = Prepared(insert(_OCCURRENCES).returning(_OCCURRENCES.c.occurrence_id), ["occurrence_id"])
    with monitor.session() as session:
        connection = session.connection()
        with pytest.raises(NotPreparable):
            expanding.first(connection)
        with pytest.raises(NotPreparable):
            returning.execute(connection, {"occurrence_id": "occ_1"})


def test_a_prepared_statement_never_runs_outside_a_transaction(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config())
    with monitor.engine.connect() as connection, pytest.raises(RuntimeError, match="unit of work"):
        Prepared(select(_INCIDENTS.c.incident_id)).first(connection)


def test_the_statement_is_compiled_once_per_dialect(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config())
    prepared = Prepared(select(_INCIDENTS.c.incident_id).where(_INCIDENTS.c.incident_id == bindparam("incident_id")))
    compiled: list[object] = []
    original = prepared._compile

    def counting(dialect: Any) -> Any:
        compiled.append(dialect)
        return original(dialect)

    prepared._compile = counting  # type: ignore[method-assign]
    with monitor.session() as session:
        for _ in range(3):
            prepared.first(session.connection(), {"incident_id": "inc_1"})
    assert compiled == [monitor.engine.dialect]
