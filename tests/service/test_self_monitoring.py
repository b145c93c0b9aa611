"""Self-monitoring: denied and blocked calls, failed publishes, denied approvals and agents' run errors
become incidents with the right severity, linked to the run whose timeline get_incident shows — and
self-monitoring never loops, never breaks the original call, and never triages."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlmodel import col, func, select

from incident_monitor.domain.enums import Decision, Severity
from incident_monitor.domain.io import IncidentReport
from incident_monitor.domain.models import AuditEvent, Incident, TriageRun
from incident_monitor.errors import PermissionDenied
from incident_monitor.policy.principal import Principal
from incident_monitor.service import approvals, intake, publishing, queries, self_monitoring, triage
from incident_monitor.service.monitor import DecisionRecord, Monitor
from support.mcp_helpers import call_ok, call_refused, mcp_client
from support.monitors import AGENT, OPERATOR, MonitorFactory, flow_config, principal

READER = principal("reader", "read")
SELF = self_monitoring.SELF_MONITOR.name


@pytest.fixture(autouse=True)
def _secret(webhook_secret: str) -> None:
    """The webhook destination is ready unless a test unsets its secret."""


def send(monitor: Monitor, who: Principal = AGENT, **fields: Any) -> tuple[str, str]:
    values = {"title": "Checkout smoke failed", "source": "ci", "event": "ci.smoke.failed", **fields}
    result = intake.report_incident(monitor, who, IncidentReport(**values))
    assert result.draft_id is not None
    return result.incident_id, result.draft_id


def self_incidents(monitor: Monitor) -> list[Incident]:
    with monitor.session() as session:
        return list(
            session.exec(
                select(Incident)
                .where(col(Incident.fingerprint).startswith("selfmon:"))
                .order_by(col(Incident.first_seen_at), col(Incident.fingerprint))
            )
        )


def the_self_incident(monitor: Monitor, fingerprint: str) -> Incident:
    found = [i for i in self_incidents(monitor) if i.fingerprint == fingerprint]
    assert len(found) == 1, [i.fingerprint for i in self_incidents(monitor)]
    return found[0]


def timeline(monitor: Monitor, incident_id: str) -> list[tuple[str, str, str]]:
    detail = queries.get_incident(monitor, OPERATOR, incident_id)
    return [(e.principal, e.action, e.decision.value) for e in detail.timeline]


def test_a_blocked_high_impact_call_is_a_critical_incident_linked_to_the_run(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config())
    _, draft_id = send(monitor, run_id="run-checkout-7", session_id="sess-1")

    with pytest.raises(PermissionDenied):
        publishing.claim(monitor, READER, draft_id)

    incident = the_self_incident(monitor, "selfmon:blocked_call:publish_draft:reader")
    assert incident.severity is Severity.critical
    assert incident.source == "incident-monitor"
    assert incident.reported_by == SELF
    assert (incident.last_run_id, incident.last_session_id) == ("run-checkout-7", "sess-1")
    assert incident.title == "Blocked call: publish_draft by reader"
    assert "lacks scope incident_monitor:publish" in incident.detail
    assert "self-monitoring" in incident.route_tags
    # The run's timeline, in order: the agent's report, the refused publish, the self-monitor's report.
    assert timeline(monitor, incident.incident_id) == [
        (AGENT.name, "report_incident", "allow"),
        ("reader", "publish_draft", "deny"),
        (SELF, "report_incident", "allow"),
    ]


def test_a_blocked_low_risk_call_is_medium_and_repeats_become_high(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config(self_monitoring={"repeated_failure_threshold": 3}))
    _, draft_id = send(monitor)

    for attempt in range(1, 4):
        with pytest.raises(PermissionDenied):
            triage.triage_draft(monitor, READER, draft_id)
        blocked = the_self_incident(monitor, "selfmon:blocked_call:triage_draft:reader")
        assert (blocked.severity, blocked.occurrence_count) == (Severity.medium, attempt)
        repeated = [i for i in self_incidents(monitor) if i.fingerprint.startswith("selfmon:repeated:")]
        assert len(repeated) == (1 if attempt == 3 else 0)

    assert repeated[0].severity is Severity.high
    assert repeated[0].title == "Repeated blocked call: triage_draft by reader"


def test_a_publish_blocked_by_policy_is_critical(make_monitor: MonitorFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INCIDENT_MONITOR_WEBHOOK_SECRET", raising=False)  # the webhook is not ready
    monitor = make_monitor(flow_config())
    _, draft_id = send(monitor, title="Deploy failed", route_tags=["runtime-failure"], run_id="run-9")

    with pytest.raises(Exception, match="publish blocked"):
        publishing.claim(monitor, AGENT, draft_id)

    incident = the_self_incident(monitor, f"selfmon:blocked_call:publish_draft:{AGENT.name}")
    assert incident.severity is Severity.critical
    assert incident.last_run_id == "run-9"
    assert "not ready" in incident.detail


@pytest.mark.anyio
async def test_a_failed_publish_is_critical_and_on_the_run_timeline(
    make_monitor: MonitorFactory, webhook_secret: str
) -> None:
    # Nothing listens on port 9: every delivery attempt fails.
    monitor = make_monitor(flow_config("http://127.0.0.1:9/hooks/incident"))
    _, draft_id = send(monitor, title="Deploy failed", route_tags=["runtime-failure"], run_id="run-deploy-3")
    requested = approvals.request_approval(monitor, AGENT, draft_id, "Deploys are failing.")
    approvals.decide_approval(monitor, OPERATOR, requested.approval.approval_id, "approve", "Checked.")

    result = await publishing.publish_draft(monitor, AGENT, draft_id)

    assert result.receipt.status.value == "failed"
    incident = the_self_incident(monitor, f"selfmon:publish_failed:publish_draft:ops-webhook:{AGENT.name}")
    assert incident.severity is Severity.critical
    assert incident.last_run_id == "run-deploy-3"
    assert result.receipt.receipt_id in incident.detail
    assert webhook_secret not in incident.detail
    assert timeline(monitor, incident.incident_id) == [
        (AGENT.name, "report_incident", "allow"),
        (AGENT.name, "request_approval", "allow"),
        (OPERATOR.name, "decide_approval", "allow"),
        (AGENT.name, "publish_draft", "allow"),
        (AGENT.name, "publish_draft.outcome", "error"),
        (SELF, "report_incident", "allow"),
    ]


def test_a_denied_approval_is_high_and_names_the_requester(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config())
    _, draft_id = send(monitor, title="Deploy failed", route_tags=["runtime-failure"], run_id="run-4")
    requested = approvals.request_approval(monitor, AGENT, draft_id, "Please publish.")

    approvals.decide_approval(monitor, OPERATOR, requested.approval.approval_id, "deny", "Not enough evidence.")

    incident = the_self_incident(monitor, f"selfmon:approval_denied:decide_approval:{AGENT.name}")
    assert incident.severity is Severity.high
    assert incident.last_run_id == "run-4"
    assert "Not enough evidence." in incident.detail
    assert OPERATOR.name in incident.detail


def test_an_agent_run_error_links_to_its_run_and_dev_sources_are_low(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config())

    prod_id, _ = send(
        monitor, title="Sync run failed", source="automation_v2", event="automation_v2.run.failed", run_id="run-prod-1"
    )
    dev_id, _ = send(
        monitor, title="Sync run failed", source="dev", event="automation_v2.run.failed", run_id="run-dev-1"
    )
    dev_with_risk, _ = send(
        monitor, title="Key leaked in dev", source="dev", event="agent.run.failed", risk_level="critical"
    )

    with monitor.session() as session:
        prod, dev, risky = (session.get(Incident, i) for i in (prod_id, dev_id, dev_with_risk))
        notes = session.exec(select(AuditEvent).where(AuditEvent.run_id == "run-dev-1")).one().reasons
    assert prod is not None and dev is not None and risky is not None
    assert (prod.severity, dev.severity) == (Severity.high, Severity.low)
    assert risky.severity is Severity.critical  # an explicit risk claim still raises it
    assert any("run error reported by local-agent, linked to run run-dev-1" in n for n in notes)
    assert any("development source 'dev': severity low" in n for n in notes)
    assert timeline(monitor, prod_id) == [(AGENT.name, "report_incident", "allow")]
    assert self_incidents(monitor) == []  # the agent's own report is the incident


def test_a_dev_source_report_still_needs_approval_by_its_level(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config())
    _, draft_id = send(monitor, source="dev", event="agent.run.failed", level="critical")

    preview = queries.get_draft(monitor, AGENT, draft_id)
    from incident_monitor.service.route_preview import preview_route

    decision = preview_route(monitor, AGENT, draft_id=draft_id)
    assert preview.draft.severity is Severity.low
    assert decision.approval_required is True  # the critical level, not the lowered severity, decides


def test_self_monitoring_does_not_recurse_when_its_own_report_is_refused(
    make_monitor: MonitorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monitor = make_monitor(flow_config())
    _, draft_id = send(monitor)
    monkeypatch.setattr(self_monitoring, "SELF_MONITOR", Principal(name=SELF, scopes=frozenset(), kind="system"))
    with monitor.session() as session:
        before = session.exec(select(func.max(AuditEvent.seq))).one() or 0

    with pytest.raises(PermissionDenied):
        triage.triage_draft(monitor, READER, draft_id)

    with monitor.session() as session:
        rows = session.exec(select(AuditEvent).where(col(AuditEvent.seq) > before).order_by(col(AuditEvent.seq)))
        decisions = [(r.principal, r.action, r.decision) for r in rows]
    assert decisions == [("reader", "triage_draft", Decision.deny), (SELF, "report_incident", Decision.deny)]
    assert self_incidents(monitor) == []


def test_a_self_monitoring_failure_never_breaks_the_original_call(
    make_monitor: MonitorFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = make_monitor(flow_config())
    _, draft_id = send(monitor)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk full")

    monkeypatch.setattr(self_monitoring, "report_incident", broken)
    with caplog.at_level(logging.ERROR), pytest.raises(PermissionDenied, match="needs scope incident_monitor:triage"):
        triage.triage_draft(monitor, READER, draft_id)

    assert "self-monitoring could not record blocked_call of triage_draft by reader" in caplog.text


def test_actions_on_a_self_monitoring_incident_open_no_further_incidents(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config())
    _, draft_id = send(monitor)
    with pytest.raises(PermissionDenied):
        triage.triage_draft(monitor, READER, draft_id)
    [incident] = self_incidents(monitor)
    with monitor.session() as session:
        self_draft = queries.list_drafts(monitor, OPERATOR, incident_id=incident.incident_id).drafts[0]
        triage_runs = session.exec(select(func.count()).select_from(TriageRun)).one()

    for _ in range(3):
        with pytest.raises(PermissionDenied):
            triage.triage_draft(monitor, READER, self_draft.draft_id)

    assert [i.fingerprint for i in self_incidents(monitor)] == [incident.fingerprint]
    assert the_self_incident(monitor, incident.fingerprint).occurrence_count == 1
    assert triage_runs == 0  # nothing is ever triaged automatically


def test_self_monitoring_can_be_switched_off(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config(self_monitoring={"enabled": False}))
    _, draft_id = send(monitor)

    with pytest.raises(PermissionDenied):
        publishing.claim(monitor, READER, draft_id)

    assert self_incidents(monitor) == []


def test_decisions_reach_only_the_listeners_registered_on_that_monitor(make_monitor: MonitorFactory) -> None:
    watched = make_monitor(flow_config())
    heard: list[DecisionRecord] = []
    watched.decision_listeners.append(lambda _monitor, record: heard.append(record))
    bare = make_monitor(flow_config(), data_dir=watched.data_dir.parent / "bare")
    bare.decision_listeners.clear()  # assembled without self-monitoring
    _, watched_draft = send(watched, run_id="run-1")
    _, bare_draft = send(bare)

    with pytest.raises(PermissionDenied):
        publishing.claim(bare, READER, bare_draft)
    assert self_incidents(bare) == []  # no listener, no incident: nothing global heard it
    assert [(r.principal.name, r.action, r.decision) for r in heard] == [
        (AGENT.name, "report_incident", Decision.allow)
    ]

    heard.clear()
    with pytest.raises(PermissionDenied):
        publishing.claim(watched, READER, watched_draft)
    # Every decision, allow or not, after its commit; the self-monitor's own report is a governed call too.
    assert [(r.principal.name, r.action, r.decision, r.run_id) for r in heard] == [
        (SELF, "report_incident", Decision.allow, "run-1"),
        ("reader", "publish_draft", Decision.deny, "run-1"),
    ]
    assert [i.fingerprint for i in self_incidents(watched)] == ["selfmon:blocked_call:publish_draft:reader"]


def test_a_monitor_without_self_monitoring_attached_opens_no_incident_for_a_denied_approval(
    make_monitor: MonitorFactory,
) -> None:
    monitor = make_monitor(flow_config())
    monitor.decision_listeners.clear()
    _, draft_id = send(monitor, title="Deploy failed", route_tags=["runtime-failure"])
    requested = approvals.request_approval(monitor, AGENT, draft_id, "Please publish.")

    approvals.decide_approval(monitor, OPERATOR, requested.approval.approval_id, "deny", "Not enough evidence.")

    assert self_incidents(monitor) == []


def test_attaching_self_monitoring_twice_registers_it_once(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config())
    assert self_monitoring.attach(self_monitoring.attach(monitor)) is monitor
    assert monitor.decision_listeners.count(self_monitoring.on_decision) == 1


def test_approval_required_and_rejected_inputs_open_no_incident(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config())
    _, draft_id = send(monitor, title="Deploy failed", route_tags=["runtime-failure"])

    with pytest.raises(Exception, match="approval required"):
        publishing.claim(monitor, AGENT, draft_id)  # the normal flow, not a blocked action
    with pytest.raises(Exception, match="routine noise"):
        send(monitor, event="ci.heartbeat")

    assert self_incidents(monitor) == []


@pytest.mark.anyio
async def test_over_mcp_a_refused_tool_call_becomes_an_incident_with_its_timeline(
    make_monitor: MonitorFactory,
) -> None:
    monitor = make_monitor(flow_config())
    async with mcp_client(monitor, AGENT) as agent:
        reported = await call_ok(
            agent,
            "report_incident",
            title="Agent run failed during Linear sync",
            source="automation_v2",
            event="automation_v2.run.failed",
            run_id="run-linear-2",
        )
        refusal = await call_refused(
            agent, "decide_approval", approval_id="apr_0000000000000000", decision="approve", note="me"
        )
    assert "permission denied" in refusal

    async with mcp_client(monitor, OPERATOR) as operator:
        page = await call_ok(operator, "list_incidents", source="incident-monitor")
        [listed] = page["incidents"]
        detail = await call_ok(operator, "get_incident", incident_id=listed["incident_id"])
        agent_detail = await call_ok(operator, "get_incident", incident_id=reported["incident_id"])

    assert listed["severity"] == "critical"
    assert detail["incident"]["fingerprint"] == f"selfmon:blocked_call:decide_approval:{AGENT.name}"
    assert detail["timeline"] == []  # no run named: the refused call carried no draft or run
    assert agent_detail["timeline_run_id"] == "run-linear-2"
    assert [(e["action"], e["decision"]) for e in agent_detail["timeline"]] == [("report_incident", "allow")]


@pytest.mark.anyio
async def test_unknown_tools_are_denied_and_audited_without_paging_anyone(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config())
    async with mcp_client(monitor, AGENT) as agent:
        for name in ("delete_everything", "drop_tables", "delete_everything", "drop_tables"):
            await call_refused(agent, name)

    # Past repeated_failure_threshold and still nothing: a malformed call pages no one (issue 12).
    assert self_incidents(monitor) == []
    with monitor.session() as session:
        rows = session.exec(select(AuditEvent).where(col(AuditEvent.action).startswith("tool:"))).all()
    assert [(r.action, r.decision.value) for r in rows] == [
        ("tool:delete_everything", "deny"),
        ("tool:drop_tables", "deny"),
        ("tool:delete_everything", "deny"),
        ("tool:drop_tables", "deny"),
    ]
