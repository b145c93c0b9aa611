"""Posture checks: deterministic rules over the inventory and recent decisions.

Each rule is a pure function of ``PostureEvidence`` (so tests can build the evidence directly, and
the same state always gives the same findings). ``collect_evidence`` gathers it from the monitor.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlmodel import Session, col, select

from incident_monitor.destinations.settings import EXTERNAL_KINDS
from incident_monitor.domain.enums import Decision, DraftStatus, ReceiptStatus, Severity
from incident_monitor.domain.models import AuditEvent, Draft, Receipt
from incident_monitor.errors import InvalidInput
from incident_monitor.policy.principal import Principal
from incident_monitor.policy.scopes import APPROVE, PUBLISH
from incident_monitor.service.audit_chain import AuditVerification
from incident_monitor.service.audit_checkpoints import verify_audit_log
from incident_monitor.service.audit_keys import is_inside
from incident_monitor.service.governance.cards import CARD_RULE_ID, build_cards
from incident_monitor.service.governance.findings import Finding, count_by_severity, sort_findings
from incident_monitor.service.governance.inventory import AuthorityInventory, ToolEntry, collect_inventory, is_usable
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.route_preview import decide_for_draft


class DeniedActionCount(BaseModel):
    principal: str
    action: str
    count: int
    audit_seqs: list[int]


class PublishRecord(BaseModel):
    """A draft that went (or was claimed to go) out, and the receipts recording it."""

    draft_id: str
    draft_status: DraftStatus
    destination_id: str | None
    external: bool
    receipt_ids: list[str]


class PostureEvidence(BaseModel):
    inventory: AuthorityInventory
    window_hours: int
    denied_action_threshold: int
    denied_actions: list[DeniedActionCount]
    publish_records: list[PublishRecord]
    audit_chain: AuditVerification
    card_findings: list[Finding]
    # Where the audit key is kept (never the key) and whether that is inside the data dir.
    audit_key_source: str = ""
    audit_key_inside_data_dir: bool = False
    retention_configured: bool = True


class PostureReport(BaseModel):
    generated_at: datetime
    policy_version: str
    rules_run: list[str]
    min_severity: Severity
    findings: list[Finding]
    counts: dict[str, int]
    passed_rules: list[str]


# --- the rules ---------------------------------------------------------------------------------------


def high_risk_route_without_approval(e: PostureEvidence) -> list[Finding]:
    return [
        Finding(
            rule_id="high-risk-route-without-approval",
            severity=Severity.high,
            title=f"{'Default destination policy' if r.is_default else f'Route {r.route_id}'} publishes high-risk "
            "drafts without approval",
            detail=f"approval_policy '{r.approval_policy.value}' to '{r.destination_id}': "
            "a critical draft needs no approval",
            evidence_refs=[f"route:{r.route_id or '(default)'}", f"destination:{r.destination_id}"],
            recommendation="set approval_policy = 'always' or 'high_risk' (or 'inherit' with "
            "approval.require_approval_for_high_risk = true)",
        )
        for r in e.inventory.routes
        if r.can_carry_high_risk and not r.approval_required_high_risk
    ]


def external_destination_without_approval(e: PostureEvidence) -> list[Finding]:
    findings = [
        Finding(
            rule_id="external-destination-without-approval",
            severity=Severity.high,
            title=f"External destination {d.destination_id} ({d.kind}) does not require approval",
            detail="require_approval = false on an external destination: routes that inherit publish without review",
            evidence_refs=[f"destination:{d.destination_id}"],
            recommendation="remove require_approval = false (external kinds require approval by default)",
        )
        for d in e.inventory.destinations
        if d.external and not d.approval_required_by_default
    ]
    findings += [
        Finding(
            rule_id="external-destination-without-approval",
            severity=Severity.high,
            title=f"{'Default destination policy' if r.is_default else f'Route {r.route_id}'} publishes to external "
            f"destination {r.destination_id} without approval",
            detail=f"approval_policy '{r.approval_policy.value}': a low-severity draft goes out with no human review",
            evidence_refs=[f"route:{r.route_id or '(default)'}", f"destination:{r.destination_id}"],
            recommendation="use approval_policy = 'inherit' or 'always' for routes to external destinations",
        )
        for r in e.inventory.routes
        if r.external and not r.approval_required_low_risk
    ]
    return findings


def unready_destination_fails_open(e: PostureEvidence) -> list[Finding]:
    return [
        Finding(
            rule_id="unready-destination-fails-open",
            severity=Severity.critical,
            title=f"Destination {d.destination_id} is not ready but routing does not block it",
            detail="; ".join(d.readiness_reasons) or "not ready",
            evidence_refs=[f"destination:{d.destination_id}", *(f"route:{r}" for r in d.route_ids)],
            recommendation="make routing block publishes to destinations that are not ready (fail closed)",
        )
        for d in e.inventory.destinations
        if not d.ready and not d.fails_closed
    ]


def route_to_unready_destination(e: PostureEvidence) -> list[Finding]:
    return [
        Finding(
            rule_id="route-to-unready-destination",
            severity=Severity.medium,
            title=f"Destination {d.destination_id} is not ready; publishes routed to it are blocked",
            detail="; ".join(d.readiness_reasons) or "not ready",
            evidence_refs=[f"destination:{d.destination_id}", *(f"route:{r}" for r in d.route_ids)],
            recommendation="fix the readiness reasons, or route elsewhere",
        )
        for d in e.inventory.destinations
        if not d.ready and d.fails_closed and (d.route_ids or d.is_default)
    ]


def outbound_mcp_without_allowlist(e: PostureEvidence) -> list[Finding]:
    return [
        Finding(
            rule_id="outbound-mcp-without-allowlist",
            severity=Severity.high,
            title=f"Outbound MCP destination {s.destination_id} has no tool allowlist",
            detail=f"server {s.server or '(unnamed)'}: without allowed_tools any tool it offers could be called",
            evidence_refs=[f"outbound_mcp:{s.destination_id}", f"destination:{s.destination_id}"],
            recommendation=f"set allowed_tools = ['{s.tool or 'the_one_tool'}'] on the destination",
        )
        for s in e.inventory.outbound_mcp_servers
        if not s.allowed_tools
    ]


def mcp_server_without_tool_allowlist(e: PostureEvidence) -> list[Finding]:
    """A guarded downstream whose read_tools is empty or a bare wildcard: no real allowlist."""
    return [
        Finding(
            rule_id="mcp_server_without_tool_allowlist",
            severity=Severity.high,
            title=f"Downstream MCP server {s.downstream_id} has no explicit read-tool allowlist",
            detail=f"read_tools = {s.read_tools}: "
            + ("nothing is readable" if not s.read_tools else "every tool matches"),
            evidence_refs=[f"downstream:{s.downstream_id}"],
            recommendation="list the downstream's read tools by name in read_tools",
        )
        for s in e.inventory.downstream_servers
        if not s.read_tools or any(p.strip("*?") == "" for p in s.read_tools)
    ]


def downstream_tool_not_read_only(e: PostureEvidence) -> list[Finding]:
    return [
        Finding(
            rule_id="downstream-tool-not-read-only",
            severity=Severity.medium,
            title=f"Downstream {s.downstream_id}: allowlisted tool {tool} is marked not read-only by the server",
            detail="it was refused at start and is treated as a blocked tool",
            evidence_refs=[f"downstream:{s.downstream_id}", f"downstream_tool:{s.downstream_id}__{tool}"],
            recommendation=f"remove {tool} from read_tools (writes go through publish_draft)",
        )
        for s in e.inventory.downstream_servers
        for tool in s.not_read_only_tools
    ]


def intake_key_unbound(e: PostureEvidence) -> list[Finding]:
    return [
        Finding(
            rule_id="intake-key-unbound",
            severity=Severity.medium,
            title=f"Intake key {k.key_id} is not bound to a project and source",
            detail=f"project_id={k.project_id or '(none)'}, source_id={k.source_id or '(none)'}: "
            "it can report for any project or source",
            evidence_refs=[f"intake_key:{k.key_id}"],
            recommendation="issue a new key bound to one project and one source, and disable this one",
        )
        for k in e.inventory.intake_keys
        if k.status == "active" and not (k.project_id and k.source_id)
    ]


def log_source_path_refused(e: PostureEvidence) -> list[Finding]:
    return [
        Finding(
            rule_id="log-source-path-refused",
            severity=Severity.high,
            title=f"Log source {s.log_source_id} refused: its path leaves the workspace root or is not a regular file",
            detail=s.problem or "",
            evidence_refs=[f"log_source:{s.log_source_id}", f"project:{s.project_id}"],
            recommendation="keep the log inside [workspace] root as a regular file (no symlink out of the root, "
            "no FIFO or device), and find out who placed the link",
        )
        for s in e.inventory.log_sources
        if s.problem is not None and ("outside the workspace root" in s.problem or "refused" in s.problem)
    ]


def publish_and_approve_same_principal(e: PostureEvidence) -> list[Finding]:
    return [
        Finding(
            rule_id="publish-and-approve-same-principal",
            severity=Severity.high,
            title=f"Principal {p.name} holds both publish and approve",
            detail="one credential can ask to publish and grant approval under another requester's name",
            evidence_refs=[f"principal:{p.name}"],
            recommendation="split it into an agent token (publish) and an operator token (approve)",
        )
        for p in e.inventory.principals
        if is_usable(p) and PUBLISH in p.scopes and APPROVE in p.scopes
    ]


def external_action_without_receipt(e: PostureEvidence) -> list[Finding]:
    return [
        Finding(
            rule_id="external-action-without-receipt",
            severity=Severity.critical,
            title=f"Draft {r.draft_id} is {r.draft_status.value} but has no receipt",
            detail=f"destination {r.destination_id or '(unknown)'}: an external effect with no record of it",
            evidence_refs=[f"draft:{r.draft_id}", *([f"destination:{r.destination_id}"] if r.destination_id else [])],
            recommendation="check the destination for the effect, then investigate how it bypassed the outbox",
        )
        for r in e.publish_records
        if r.external and not r.receipt_ids
    ]


def recurring_denied_action(e: PostureEvidence) -> list[Finding]:
    return [
        Finding(
            rule_id="recurring-denied-action",
            severity=Severity.high if d.count >= 3 * e.denied_action_threshold else Severity.medium,
            title=f"{d.principal} was denied {d.action} {d.count} times in {e.window_hours} h",
            detail="a caller keeps trying something policy refuses: a misconfigured agent or a probe",
            evidence_refs=[f"principal:{d.principal}", *(f"audit:seq:{s}" for s in d.audit_seqs[-5:])],
            recommendation="check the agent's instructions and token scopes; revoke the token if it is not expected",
        )
        for d in e.denied_actions
        if d.count >= e.denied_action_threshold
    ]


def audit_chain_broken(e: PostureEvidence) -> list[Finding]:
    if e.audit_chain.ok:
        return []
    return [
        Finding(
            rule_id="audit-chain-broken",
            severity=Severity.critical,
            title=f"Audit chain broken at event {e.audit_chain.first_broken_seq}",
            detail=e.audit_chain.problem or "the hash chain does not verify",
            evidence_refs=[f"audit:seq:{e.audit_chain.first_broken_seq}"],
            recommendation="preserve the database as evidence, restore from backup, and find who had write access",
        )
    ]


def audit_key_inside_data_dir(e: PostureEvidence) -> list[Finding]:
    if not e.audit_key_inside_data_dir:
        return []
    return [
        Finding(
            rule_id="audit-key-inside-data-dir",
            severity=Severity.high,
            title="The audit key is kept inside the data dir",
            detail=f"{e.audit_key_source}: whoever can copy or rewrite the database can also re-seal the audit "
            "chain and sign checkpoints",
            evidence_refs=["config:audit.key_file"],
            recommendation="move the key file outside the data dir (audit.key_file, INCIDENT_MONITOR_AUDIT_KEY_FILE) "
            "or pass the key in INCIDENT_MONITOR_AUDIT_KEY; keep the old key file until its rows are archived",
        )
    ]


def retention_policy_missing(e: PostureEvidence) -> list[Finding]:
    if e.retention_configured:
        return []
    return [
        Finding(
            rule_id="retention_policy_missing",
            severity=Severity.medium,
            title="No retention policy: evidence is kept forever and never archived",
            detail="incidents, drafts, approvals, receipts and audit rows grow without bound, and nothing says "
            "how long reports (which may hold personal data) are kept",
            evidence_refs=["config:retention"],
            recommendation="add a [retention] section (incidents_days, audit_days) and run "
            "`incident-monitor retention apply` on a schedule; export evidence first if it must outlive it",
        )
    ]


def deployment_card_incomplete(e: PostureEvidence) -> list[Finding]:
    return list(e.card_findings)


@dataclass(frozen=True)
class Rule:
    rule_id: str
    check: Callable[[PostureEvidence], list[Finding]]


RULES: dict[str, Rule] = {
    rule.rule_id: rule
    for rule in (
        Rule("high-risk-route-without-approval", high_risk_route_without_approval),
        Rule("external-destination-without-approval", external_destination_without_approval),
        Rule("unready-destination-fails-open", unready_destination_fails_open),
        Rule("route-to-unready-destination", route_to_unready_destination),
        Rule("outbound-mcp-without-allowlist", outbound_mcp_without_allowlist),
        Rule("mcp_server_without_tool_allowlist", mcp_server_without_tool_allowlist),
        Rule("downstream-tool-not-read-only", downstream_tool_not_read_only),
        Rule("intake-key-unbound", intake_key_unbound),
        Rule("log-source-path-refused", log_source_path_refused),
        Rule("publish-and-approve-same-principal", publish_and_approve_same_principal),
        Rule("external-action-without-receipt", external_action_without_receipt),
        Rule("recurring-denied-action", recurring_denied_action),
        Rule("audit-chain-broken", audit_chain_broken),
        Rule("audit-key-inside-data-dir", audit_key_inside_data_dir),
        Rule("retention_policy_missing", retention_policy_missing),
        Rule(CARD_RULE_ID, deployment_card_incomplete),
    )
}


def evaluate(
    evidence: PostureEvidence, rules: Sequence[str] | None = None, min_severity: Severity = Severity.low
) -> PostureReport:
    selected = list(rules) if rules else list(RULES)
    unknown = [r for r in selected if r not in RULES]
    if unknown:
        # The ids sent are not repeated: a caller's text may carry a secret.
        raise InvalidInput(
            f"rules: {len(unknown)} unknown rule id(s), not repeated here; known rules: {', '.join(RULES)}"
        )
    findings: list[Finding] = []
    fired: set[str] = set()
    for rule_id in selected:
        found = RULES[rule_id].check(evidence)
        fired.update(f.rule_id for f in found)
        findings += [f for f in found if f.severity.rank >= min_severity.rank]
    findings = sort_findings(findings)
    return PostureReport(
        generated_at=evidence.inventory.generated_at,
        policy_version=evidence.inventory.policy_version,
        rules_run=selected,
        min_severity=min_severity,
        findings=findings,
        counts=count_by_severity(findings),
        passed_rules=[r for r in selected if r not in fired],
    )


# --- gathering the evidence --------------------------------------------------------------------------


def _denied_actions(session: Session, since: datetime) -> list[DeniedActionCount]:
    rows = session.exec(
        select(AuditEvent.seq, AuditEvent.principal, AuditEvent.action)
        .where(AuditEvent.decision == Decision.deny, col(AuditEvent.at) >= since)
        .order_by(col(AuditEvent.seq))
    ).all()
    seqs: dict[tuple[str, str], list[int]] = {}
    for seq, who, action in rows:
        seqs.setdefault((who, action), []).append(int(seq or 0))
    counts = Counter({key: len(v) for key, v in seqs.items()})
    return [
        DeniedActionCount(principal=who, action=action, count=n, audit_seqs=seqs[(who, action)])
        for (who, action), n in sorted(counts.items())
    ]


def _publish_records(monitor: Monitor, session: Session) -> list[PublishRecord]:
    out_statuses = (DraftStatus.publishing, DraftStatus.published, DraftStatus.publish_failed)
    drafts = session.exec(select(Draft).where(col(Draft.status).in_(out_statuses)).order_by(col(Draft.draft_id))).all()
    records = []
    for draft in drafts:
        receipts = session.exec(
            select(Receipt).where(Receipt.draft_id == draft.draft_id, Receipt.status != ReceiptStatus.blocked)
        ).all()
        if receipts:
            destination_id: str | None = receipts[0].destination_id
            kind: str | None = receipts[0].destination_kind
        else:
            decision = decide_for_draft(monitor, draft)
            destination_id, kind = decision.destination_id, decision.destination_kind
        records.append(
            PublishRecord(
                draft_id=draft.draft_id,
                draft_status=draft.status,
                destination_id=destination_id,
                # Unknown destination: assume the worst (an external effect).
                external=kind is None or kind in EXTERNAL_KINDS,
                receipt_ids=[r.receipt_id for r in receipts],
            )
        )
    return records


def collect_evidence(monitor: Monitor, session: Session, tools: Sequence[ToolEntry]) -> PostureEvidence:
    inventory = collect_inventory(monitor, session, tools)
    settings = monitor.config.posture
    since = monitor.clock() - timedelta(hours=settings.recent_window_hours)
    return PostureEvidence(
        inventory=inventory,
        window_hours=settings.recent_window_hours,
        denied_action_threshold=settings.denied_action_threshold,
        denied_actions=_denied_actions(session, since),
        publish_records=_publish_records(monitor, session),
        # Incremental: the rows since the last signed checkpoint, so posture costs the same at any history.
        audit_chain=verify_audit_log(monitor, session, incremental=True),
        card_findings=build_cards(monitor.config, inventory).findings,
        audit_key_source=monitor.audit_keys.source,
        audit_key_inside_data_dir=monitor.audit_keys.key_file is not None
        and is_inside(monitor.audit_keys.key_file, monitor.data_dir),
        retention_configured=monitor.config.retention is not None,
    )


def run_posture_checks(
    monitor: Monitor,
    principal: Principal,
    tools: Sequence[ToolEntry],
    *,
    rules: Sequence[str] | None = None,
    min_severity: Severity = Severity.low,
) -> PostureReport:
    arguments = {"rules": list(rules) if rules else None, "min_severity": min_severity.value}
    with governed_call(monitor, principal, "run_posture_checks", arguments) as call:
        report = evaluate(collect_evidence(monitor, call.session, tools), rules, min_severity)
        call.notes.append(f"{len(report.findings)} finding(s): {report.counts}")
        return report
