"""One INFO line per governed call on ``incident_monitor.audit``: who, what, decision, ids, duration; never values."""

from __future__ import annotations

import logging

import pytest

from incident_monitor.domain.io import IncidentReport
from incident_monitor.errors import InsufficientScope, MonitorError
from incident_monitor.policy.principal import LOCAL_AGENT
from incident_monitor.service.incidents import resolve_incident
from incident_monitor.service.intake import report_incident
from incident_monitor.service.monitor import Monitor
from support.monitors import MonitorFactory, principal

AUDIT_LOGGER = "incident_monitor.audit"
CANARY_TITLE = "canary-title-7f3a91"
CANARY_DETAIL = "canary-detail-c0ffee token=sk-live-0123456789abcdef"


def audit_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == AUDIT_LOGGER]


@pytest.fixture
def monitor(make_monitor: MonitorFactory, caplog: pytest.LogCaptureFixture) -> Monitor:
    """A monitor, with INFO on the audit logger captured."""
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    return make_monitor()


def canary_report() -> IncidentReport:
    return IncidentReport(
        title=f"Smoke test failed {CANARY_TITLE}",
        detail=CANARY_DETAIL,
        source="ci",
        event="ci.smoke.failed",
        run_id="run-77",
    )


def everything_logged(record: logging.LogRecord) -> str:
    return record.getMessage() + repr(record.__dict__)


def test_an_allowed_call_logs_one_info_line_with_its_ids_and_none_of_its_values(
    monitor: Monitor, caplog: pytest.LogCaptureFixture
) -> None:

    result = report_incident(monitor, LOCAL_AGENT, canary_report())

    [record] = audit_records(caplog)
    assert record.levelno == logging.INFO
    message = record.getMessage()
    assert message.startswith("governed call tool=report_incident principal=local-agent decision=allow ids=")
    assert f"subject_id={result.incident_id}" in message
    assert "run_id=run-77" in message
    assert "duration_ms=" in message
    # The same fields, structured, for a JSON formatter.
    assert record.principal == "local-agent"  # type: ignore[attr-defined]
    assert record.action == "report_incident"  # type: ignore[attr-defined]
    assert record.decision == "allow"  # type: ignore[attr-defined]
    assert record.ids == {"subject_id": result.incident_id, "run_id": "run-77"}  # type: ignore[attr-defined]
    assert isinstance(record.duration_ms, float) and record.duration_ms >= 0  # type: ignore[attr-defined]
    for value in (CANARY_TITLE, "canary-detail", "sk-live-0123456789abcdef", "ci.smoke.failed"):
        assert value not in everything_logged(record)


def test_a_denied_call_logs_one_deny_line_and_none_of_its_values(
    monitor: Monitor, caplog: pytest.LogCaptureFixture
) -> None:
    reader = principal("ci-reader", "read")

    with pytest.raises(InsufficientScope):
        report_incident(monitor, reader, canary_report())

    # The denial, then self-monitoring's own governed call reporting it: a line each.
    record, self_report = audit_records(caplog)
    assert self_report.principal == "system:self-monitor"  # type: ignore[attr-defined]
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith("governed call tool=report_incident principal=ci-reader decision=deny ids=")
    assert record.decision == "deny"  # type: ignore[attr-defined]
    assert record.principal == "ci-reader"  # type: ignore[attr-defined]
    for value in (CANARY_TITLE, "canary-detail", "sk-live-0123456789abcdef"):
        assert value not in everything_logged(record)
        assert value not in everything_logged(self_report)


def test_a_rejected_call_logs_its_decision_and_a_made_up_id_cannot_inject_a_line(
    monitor: Monitor, caplog: pytest.LogCaptureFixture
) -> None:

    with pytest.raises(MonitorError):
        resolve_incident(monitor, principal("op", "resolve"), "inc_x\nfake line decision=allow", f"note {CANARY_TITLE}")

    record = audit_records(caplog)[0]
    message = record.getMessage()
    assert "decision=rejected" in message
    # Not an id's shape: neither the audit row nor the line keeps it (issue 12), so nothing to inject.
    assert "ids=-" in message and "inc_x" not in message
    assert "\n" not in message
    assert CANARY_TITLE not in everything_logged(record)


def test_each_governed_call_gets_exactly_one_line(monitor: Monitor, caplog: pytest.LogCaptureFixture) -> None:

    for _ in range(3):
        report_incident(monitor, LOCAL_AGENT, canary_report())

    assert [r.action for r in audit_records(caplog)] == ["report_incident"] * 3  # type: ignore[attr-defined]
