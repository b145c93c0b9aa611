"""A NUL character a caller sends in free text: PostgreSQL's text cannot hold one (SQLite's can), so there it is
stored as U+FFFD instead of failing the call; the audit chain verifies on both."""

from __future__ import annotations

from incident_monitor.domain.enums import Decision
from incident_monitor.domain.io import IncidentReport
from incident_monitor.domain.models import Incident
from incident_monitor.service import intake
from incident_monitor.service.audit_chain import append_audit
from incident_monitor.service.audit_checkpoints import verify_audit_log
from support.monitors import AGENT, MonitorFactory, flow_config


def test_a_report_with_nul_characters_is_stored_and_the_chain_verifies(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config())
    result = intake.report_incident(
        monitor,
        AGENT,
        IncidentReport(
            title="Checkout \x00 failed", detail="stack\x00trace", source="ci", event="ci.nul", context={"k": "v\x00"}
        ),
    )
    with monitor.session() as session:
        append_audit(
            session,
            monitor.audit_keys,
            at=monitor.clock(),
            principal="agent\x00x",
            action="report\x00incident",
            decision=Decision.allow,
            reasons=["a reason with \x00"],
            arguments={},
            subject_id="subject\x00",
            run_id="run\x00",
        )
    with monitor.session() as session:
        incident = session.get(Incident, result.incident_id)
        assert incident is not None
        expected = "\x00" if monitor.engine.dialect.name == "sqlite" else "\ufffd"
        assert incident.title == f"Checkout {expected} failed"
        assert incident.context == {"k": "v\x00"}  # JSON keeps it escaped on both
        verified = verify_audit_log(monitor, session)
    assert verified.ok, verified.problem
