"""Posture checks: every rule fires on the state it is about and stays quiet otherwise.

Rules run on evidence gathered from a real monitor (real SQLite, real config, real routing); the
sections whose producers land with other issues (intake keys, MCP-tool destinations) and a state
the routing code cannot produce (an unready destination failing open) are built directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from incident_monitor.domain.enums import Severity
from incident_monitor.domain.io import IncidentReport
from incident_monitor.errors import InvalidInput, PermissionDenied
from incident_monitor.server.tools import tool_catalog
from incident_monitor.service import intake, publishing, tokens
from incident_monitor.service.governance import posture
from incident_monitor.service.governance.inventory import IntakeKeyEntry, OutboundMcpServerEntry
from incident_monitor.service.monitor import Monitor
from support.databases import raw_sql
from support.monitors import AGENT, OPERATOR, FakeClock, MonitorFactory, flow_config, principal

COMPLETE_CARD: dict[str, Any] = {
    "owner": "SRE",
    "accountable_team": "platform",
    "autonomy_level": "human-approved publish",
    "data_classification": "internal",
    "escalation": "page the on-call",
    "review_cadence": "quarterly",
}
CARDS = [{"kind": "agent", "subject": "local-agent", **COMPLETE_CARD}, {"kind": "monitor", **COMPLETE_CARD}]


def clean_config(**overrides: Any) -> dict[str, Any]:
    """flow_config with complete deployment cards and a retention policy: no rule fires on it (with the webhook
    secret set)."""
    return flow_config(deployment_cards=CARDS, retention=RETENTION, **overrides)


RETENTION = {"incidents_days": 365, "audit_days": 730}


def evidence(monitor: Monitor) -> posture.PostureEvidence:
    with monitor.session() as session:
        return posture.collect_evidence(monitor, session, tool_catalog())


def fired(monitor_or_evidence: Monitor | posture.PostureEvidence, rule: str) -> list[posture.Finding]:
    found = evidence(monitor_or_evidence) if isinstance(monitor_or_evidence, Monitor) else monitor_or_evidence
    return posture.evaluate(found, [rule]).findings


def with_inventory(found: posture.PostureEvidence, **sections: Any) -> posture.PostureEvidence:
    return found.model_copy(update={"inventory": found.inventory.model_copy(update=sections)})


def send(monitor: Monitor, **fields: Any) -> str:
    values = {"title": "Checkout smoke failed", "source": "ci", "event": "ci.smoke.failed", **fields}
    draft_id = intake.report_incident(monitor, AGENT, IncidentReport(**values)).draft_id
    assert draft_id is not None
    return draft_id


@pytest.fixture(autouse=True)
def _secret(webhook_secret: str) -> None:
    """The webhook destination is ready unless a test unsets its secret."""


def test_a_clean_config_has_no_findings(make_monitor: MonitorFactory) -> None:
    report = posture.run_posture_checks(make_monitor(clean_config()), OPERATOR, tool_catalog())

    assert report.findings == []
    assert report.passed_rules == list(posture.RULES)
    assert report.counts == {"critical": 0, "high": 0, "medium": 0, "low": 0}


def test_high_risk_route_without_approval(make_monitor: MonitorFactory) -> None:
    config = clean_config()
    config["routes"][0]["approval_policy"] = "never"
    [finding] = fired(make_monitor(config), "high-risk-route-without-approval")

    assert finding.severity is Severity.high
    assert finding.evidence_refs == ["route:runtime-failures", "destination:ops-webhook"]
    assert "approval_policy" in finding.recommendation


def test_high_risk_route_rule_ignores_routes_that_cannot_carry_high_risk(make_monitor: MonitorFactory) -> None:
    config = clean_config()
    config["routes"][0] |= {"approval_policy": "never", "match": {"route_tags": ["x"], "severities": ["low"]}}

    assert fired(make_monitor(config), "high-risk-route-without-approval") == []
    assert fired(make_monitor(clean_config()), "high-risk-route-without-approval") == []


def test_high_risk_default_policy_without_approval_fires(make_monitor: MonitorFactory) -> None:
    config = clean_config(approval={"require_approval_for_high_risk": False})
    findings = fired(make_monitor(config), "high-risk-route-without-approval")

    assert [f.evidence_refs[0] for f in findings] == ["route:(default)"]


def test_external_destination_without_approval(make_monitor: MonitorFactory) -> None:
    config = clean_config()
    config["destinations"][0]["require_approval"] = False
    config["routes"][1]["approval_policy"] = "high_risk"
    findings = fired(make_monitor(config), "external-destination-without-approval")

    assert {tuple(f.evidence_refs) for f in findings} == {
        ("destination:ops-webhook",),
        ("route:runtime-failures", "destination:ops-webhook"),  # inherits the destination's "no approval"
        ("route:safety-signals", "destination:ops-webhook"),  # high_risk: low severity goes out unreviewed
    }
    assert fired(make_monitor(clean_config()), "external-destination-without-approval") == []


def test_unready_destination_fails_open(make_monitor: MonitorFactory) -> None:
    found = evidence(make_monitor(clean_config()))
    destination = found.inventory.destinations[0].model_copy(update={"ready": False, "fails_closed": False})
    failing_open = with_inventory(found, destinations=[destination, *found.inventory.destinations[1:]])

    [finding] = fired(failing_open, "unready-destination-fails-open")

    assert finding.severity is Severity.critical
    assert finding.evidence_refs[0] == "destination:ops-webhook"


def test_an_unready_destination_fails_closed_in_the_real_routing(
    make_monitor: MonitorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INCIDENT_MONITOR_WEBHOOK_SECRET")
    found = evidence(make_monitor(clean_config()))

    webhook = found.inventory.destinations[0]
    assert (webhook.ready, webhook.fails_closed) == (False, True)
    assert fired(found, "unready-destination-fails-open") == []
    [blocked] = fired(found, "route-to-unready-destination")
    assert blocked.severity is Severity.medium
    assert "INCIDENT_MONITOR_WEBHOOK_SECRET" in blocked.detail  # the variable's name, never its value


def test_route_to_unready_destination_is_quiet_when_ready(make_monitor: MonitorFactory) -> None:
    assert fired(make_monitor(clean_config()), "route-to-unready-destination") == []


def test_outbound_mcp_server_without_allowlist(make_monitor: MonitorFactory) -> None:
    found = evidence(make_monitor(clean_config()))
    assert found.inventory.outbound_mcp_servers == []  # no MCP-tool destinations in this config
    servers = [
        OutboundMcpServerEntry(
            destination_id="memory", server="memory", tool="create_entities", transport="stdio", allowed_tools=[]
        ),
        OutboundMcpServerEntry(destination_id="empty", server="s", tool="t", transport="http", allowed_tools=[]),
        OutboundMcpServerEntry(destination_id="listed", server="s", tool="t", transport="http", allowed_tools=["t"]),
    ]

    findings = fired(with_inventory(found, outbound_mcp_servers=servers), "outbound-mcp-without-allowlist")

    assert [f.evidence_refs[0] for f in findings] == ["outbound_mcp:empty", "outbound_mcp:memory"]
    assert all(f.severity is Severity.high for f in findings)


def test_intake_key_not_bound_to_a_project_and_source(make_monitor: MonitorFactory) -> None:
    found = evidence(make_monitor(clean_config()))
    assert found.inventory.intake_keys == []

    def key(key_id: str, project: str | None, source: str | None, key_status: str = "active") -> IntakeKeyEntry:
        return IntakeKeyEntry(
            key_id=key_id, project_id=project, source_id=source, scopes=["incident_monitor:report"], status=key_status
        )  # type: ignore[arg-type]

    keys = [
        key("imk_bound", "shop", "ci"),
        key("imk_no_source", "shop", None),
        key("imk_nothing", None, None),
        key("imk_disabled", None, None, "disabled"),
    ]
    findings = fired(with_inventory(found, intake_keys=keys), "intake-key-unbound")

    assert [f.evidence_refs for f in findings] == [["intake_key:imk_no_source"], ["intake_key:imk_nothing"]]


def test_one_principal_holding_publish_and_approve(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(clean_config())
    tokens.create_token(monitor, OPERATOR, name="agent", scopes=["read", "publish"])
    tokens.create_token(monitor, OPERATOR, name="approver", scopes=["read", "approve"])
    assert fired(monitor, "publish-and-approve-same-principal") == []

    tokens.create_token(monitor, OPERATOR, name="both", scopes=["publish", "approve"])
    tokens.create_token(monitor, OPERATOR, name="both-revoked", scopes=["publish", "approve"])
    tokens.revoke_token(monitor, OPERATOR, "both-revoked")

    [finding] = fired(monitor, "publish-and-approve-same-principal")
    assert finding.evidence_refs == ["principal:both"]


@pytest.mark.anyio
async def test_external_action_without_receipt(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(clean_config())
    telemetry_draft = send(monitor, level="warning")  # default route: telemetry, no approval needed
    await publishing.publish_draft(monitor, AGENT, telemetry_draft)
    assert fired(monitor, "external-action-without-receipt") == []

    # A draft marked published behind the outbox's back: an external effect nobody has a receipt for.
    webhook_draft = send(monitor, title="Deploy failed", route_tags=["runtime-failure"])
    raw_sql(monitor, ("UPDATE drafts SET status = 'published' WHERE draft_id = ?", (webhook_draft,)))

    [finding] = fired(monitor, "external-action-without-receipt")
    assert finding.severity is Severity.critical
    assert finding.evidence_refs == [f"draft:{webhook_draft}", "destination:ops-webhook"]


def test_recurring_denied_action(make_monitor: MonitorFactory, clock: FakeClock) -> None:
    monitor = make_monitor(clean_config(posture={"denied_action_threshold": 3}))
    reader = principal("reader", "read")
    draft_id = send(monitor)

    def deny_publish() -> None:
        with pytest.raises(PermissionDenied):
            publishing.claim(monitor, reader, draft_id)

    deny_publish()
    deny_publish()
    assert fired(monitor, "recurring-denied-action") == []

    deny_publish()
    [finding] = fired(monitor, "recurring-denied-action")
    assert finding.severity is Severity.medium
    assert finding.title == "reader was denied publish_draft 3 times in 24 h"
    assert finding.evidence_refs[0] == "principal:reader"
    assert all(ref.startswith("audit:seq:") for ref in finding.evidence_refs[1:])

    clock.advance(hours=25)  # out of the window
    assert fired(monitor, "recurring-denied-action") == []


def test_broken_audit_chain(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(clean_config())
    send(monitor)
    send(monitor, title="Another failure")
    assert fired(monitor, "audit-chain-broken") == []

    raw_sql(monitor, "UPDATE audit_events SET reasons = '[]' WHERE seq = 1")

    [finding] = fired(monitor, "audit-chain-broken")
    assert (finding.severity, finding.evidence_refs) == (Severity.critical, ["audit:seq:1"])


def test_incomplete_deployment_cards(make_monitor: MonitorFactory) -> None:
    partial = {"kind": "agent", "subject": "local-agent", "owner": "SRE", "review_cadence": "monthly"}
    findings = fired(make_monitor(flow_config(deployment_cards=[partial])), "deployment-card-incomplete")

    assert [(f.evidence_refs, f.severity) for f in findings] == [
        (["card:monitor:incident-monitor"], Severity.high),
        (["card:agent:local-agent"], Severity.medium),
    ]
    assert findings[1].detail == "missing: accountable_team, autonomy_level, data_classification, escalation"


def test_rules_and_min_severity_select_what_is_reported(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config(retention=RETENTION))  # no cards: one high and one medium card finding

    everything = posture.run_posture_checks(monitor, OPERATOR, tool_catalog())
    high_only = posture.run_posture_checks(monitor, OPERATOR, tool_catalog(), min_severity=Severity.high)
    one_rule = posture.run_posture_checks(monitor, OPERATOR, tool_catalog(), rules=["audit-chain-broken"])

    assert [f.severity for f in everything.findings] == [Severity.high, Severity.medium]
    assert [f.severity for f in high_only.findings] == [Severity.high]
    assert (one_rule.rules_run, one_rule.findings, one_rule.passed_rules) == (
        ["audit-chain-broken"],
        [],
        ["audit-chain-broken"],
    )
    with pytest.raises(InvalidInput, match=r"rules: 1 unknown rule id.*known rules: high-risk-route") as refused:
        posture.run_posture_checks(monitor, OPERATOR, tool_catalog(), rules=["no-such-rule"])
    assert "no-such-rule" not in str(refused.value)  # a caller's text is never repeated


def test_posture_needs_the_governance_scope(make_monitor: MonitorFactory) -> None:
    with pytest.raises(PermissionDenied, match="incident_monitor:governance"):
        posture.run_posture_checks(make_monitor(clean_config()), AGENT, tool_catalog())


# --- evidence lifecycle and the audit key (issue 12) ------------------------------------------------


def test_no_retention_policy_is_a_finding(make_monitor: MonitorFactory, tmp_path: Path) -> None:
    findings = fired(make_monitor(flow_config()), "retention_policy_missing")

    assert [(f.rule_id, f.severity) for f in findings] == [("retention_policy_missing", Severity.medium)]
    assert "[retention]" in findings[0].recommendation
    assert fired(make_monitor(clean_config(), data_dir=tmp_path / "with-policy"), "retention_policy_missing") == []


def test_an_audit_key_inside_the_data_dir_is_a_finding(make_monitor: MonitorFactory, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    inside = make_monitor(clean_config(audit={"key_file": str(data_dir / "audit-keys.json")}), data_dir=data_dir)
    outside = make_monitor(clean_config(), data_dir=tmp_path / "other")

    findings = fired(inside, "audit-key-inside-data-dir")
    assert [(f.rule_id, f.severity) for f in findings] == [("audit-key-inside-data-dir", Severity.high)]
    assert "outside the data dir" in findings[0].recommendation
    assert fired(outside, "audit-key-inside-data-dir") == []
