"""A report's checks and redaction run before it takes the store's write turn (issue 18): they never hold up
other reports' store work; a call whose body needs the store still has it for its whole body; and no call holds
the turn across an await."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from incident_monitor.domain.io import IncidentReport, ReportResult
from incident_monitor.policy.principal import LOCAL_AGENT
from incident_monitor.server.tools import tool_catalog
from incident_monitor.service import intake, status
from incident_monitor.service.governance import probes
from incident_monitor.service.governance import report as governance_report
from incident_monitor.service.governed import governed_call
from incident_monitor.service.intake import report_incident
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.queries import list_incidents
from support.monitors import OPERATOR, MonitorFactory, flow_config

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


@pytest.mark.anyio
@pytest.mark.parametrize("action", ["run_assessment_probes", "build_assessment_report"])
async def test_the_assessment_calls_hold_no_write_turn_while_their_probes_run(
    make_monitor: MonitorFactory, monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    # Both await their probes on the event loop: a write turn held across those awaits stalled every other writer
    # and let the loop's other calls join the held transaction (the tool-input fuzz met it as a get_status failing
    # with "already initialized a Transaction" after a probe run).
    monitor = make_monitor(flow_config())
    run_probes = probes.run_probes
    stored: list[ReportResult] = []

    async def probes_while_another_reports(*args: Any, **kwargs: Any) -> probes.ProbeReport:
        thread, done = report_in_a_thread(monitor, f"during {action}")
        thread.join(WAIT_SECONDS)
        assert not thread.is_alive(), f"a report waited for {action}'s probes"
        stored.extend(done)
        return await run_probes(*args, **kwargs)

    monkeypatch.setattr(probes, "run_probes", probes_while_another_reports)
    monkeypatch.setattr(governance_report, "run_probes", probes_while_another_reports)
    if action == "run_assessment_probes":
        await probes.run_assessment_probes(monitor, OPERATOR, tool_catalog())
    else:
        await governance_report.build_assessment_report(monitor, OPERATOR, tool_catalog())
    assert [r.deduplicated for r in stored] == [False]
    assert status.get_status(monitor, LOCAL_AGENT).readiness.ingest_ready  # the store is usable after it
