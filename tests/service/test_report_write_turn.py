"""A report's checks and redaction run before it takes the store's write turn (issue 18): they never hold up
other reports' store work, and a call whose body needs the store still has it for its whole body."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from incident_monitor.domain.io import IncidentReport, ReportResult
from incident_monitor.policy.principal import LOCAL_AGENT
from incident_monitor.service import intake
from incident_monitor.service.governed import governed_call
from incident_monitor.service.intake import report_incident
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.queries import list_incidents
from support.monitors import MonitorFactory

WAIT_SECONDS = 20  # far above a report's time: reached only when the other report is held up


def a_report(title: str) -> IncidentReport:
    return IncidentReport(title=title, detail="TypeError in cart.js", source="ci", event="ci.smoke.failed")


def report_in_a_thread(monitor: Monitor, title: str) -> tuple[threading.Thread, list[ReportResult]]:
    done: list[ReportResult] = []
    thread = threading.Thread(target=lambda: done.append(report_incident(monitor, LOCAL_AGENT, a_report(title))))
    thread.start()
    return thread, done


def test_another_report_is_stored_while_one_is_being_redacted(
    make_monitor: MonitorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monitor = make_monitor()
    redact = intake._redact
    other: list[ReportResult] = []

    def redact_while_another_reports(report: IncidentReport) -> Any:
        if report.title == "first" and not other:
            thread, other_done = report_in_a_thread(monitor, "second")
            thread.join(WAIT_SECONDS)
            # Held up by the first report's write turn, it would still be waiting here.
            assert not thread.is_alive(), "the second report waited for the first one's redaction"
            other.extend(other_done)
        return redact(report)

    monkeypatch.setattr(intake, "_redact", redact_while_another_reports)
    first = report_incident(monitor, LOCAL_AGENT, a_report("first"))
    assert [r.deduplicated for r in other] == [False]
    # Both stored, each with its own allowed audit row; the second one's committed first.
    titles = {i.title for i in list_incidents(monitor, LOCAL_AGENT).incidents}
    assert titles == {"first", "second"}
    assert first.incident_id != other[0].incident_id


def test_a_governed_body_that_uses_the_store_holds_the_turn_from_its_start(make_monitor: MonitorFactory) -> None:
    # Without defer_unit (every call but a report) the unit of work is taken before the body runs, so what the
    # body reads and writes is one unit with its audit row: another report waits until the call is committed.
    monitor = make_monitor()
    with governed_call(monitor, LOCAL_AGENT, "get_status", {}) as call:
        assert call.connection() is not None
        thread, done = report_in_a_thread(monitor, "waiting")
        thread.join(0.5)
        assert thread.is_alive() and not done  # the report waits for this call's turn to end
    thread.join(WAIT_SECONDS)
    assert not thread.is_alive() and [r.deduplicated for r in done] == [False]
