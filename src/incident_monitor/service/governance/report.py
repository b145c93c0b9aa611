"""The assessment report: inventory, posture findings, probe results and deployment cards, as JSON
and as Markdown, with evidence refs and recommendations.

Redacted by construction (the inventory holds no credentials, key material, hashes, auth headers
or destination config values), and every free text that came from elsewhere (readiness reasons,
probe observations) is passed through the redactor once more before it is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel

from incident_monitor.domain.enums import Severity
from incident_monitor.policy.principal import Principal
from incident_monitor.policy.redaction import redact_text
from incident_monitor.service.governance.cards import DeploymentCards, build_cards
from incident_monitor.service.governance.findings import Finding
from incident_monitor.service.governance.inventory import AuthorityInventory, ToolEntry
from incident_monitor.service.governance.posture import PostureReport, collect_evidence, evaluate
from incident_monitor.service.governance.probes import ProbeReport, ProbeResult, run_probes
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor


class AssessmentReport(BaseModel):
    generated_at: datetime
    policy_version: str
    summary: dict[str, int]
    recommendations: list[str]
    inventory: AuthorityInventory
    posture: PostureReport
    probes: ProbeReport
    cards: DeploymentCards
    markdown: str


def _cell(value: object) -> str:
    if value is None:
        return "—"
    text = ", ".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)
    return redact_text(text).replace("|", "\\|").replace("\n", " ") or "—"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    if not rows:
        return ["_none_", ""]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _checks_passed(probe: ProbeResult) -> str:
    checked = [c for c in probe.checks if c.passed is not None]
    unchecked = len(probe.checks) - len(checked)
    text = f"{sum(1 for c in checked if c.passed)}/{len(checked)}"
    return text + (f" ({unchecked} not checked)" if unchecked else "")


def _recommendations(findings: Sequence[Finding], probes: ProbeReport) -> list[str]:
    seen: dict[str, None] = {}
    for finding in findings:
        seen.setdefault(f"[{finding.severity.value}] {finding.rule_id}: {finding.recommendation}", None)
    for probe in probes.probes:
        if probe.status == "failed":
            seen.setdefault(f"[probe failed] {probe.probe_id}: {probe.recommendation}", None)
    return list(seen)


def render_markdown(report: AssessmentReport) -> str:
    inv, posture, probes, cards = report.inventory, report.posture, report.probes, report.cards
    out = [
        "# Incident Monitor assessment report",
        "",
        f"Generated {report.generated_at.isoformat()} · policy `{report.policy_version}` · redacted "
        "(no credentials, key material, secrets, auth headers or destination config values).",
        "",
        "## Summary",
        "",
        *_table(["measure", "value"], list(report.summary.items())),
        "## Recommendations",
        "",
        *([f"{i}. {_cell(r)}" for i, r in enumerate(report.recommendations, 1)] or ["_none_"]),
        "",
        "## Posture findings",
        "",
        *_table(
            ["severity", "rule", "finding", "evidence", "recommendation"],
            [(f.severity.value, f.rule_id, f.title, f.evidence_refs, f.recommendation) for f in posture.findings],
        ),
        f"Rules run: {', '.join(posture.rules_run)}. Passed: {', '.join(posture.passed_rules) or 'none'}.",
        "",
        "## Assessment probes (dry run)",
        "",
        f"{probes.side_effects}.",
        "",
        *_table(
            ["probe", "status", "checks passed", "evidence"],
            [(p.probe_id, p.status, _checks_passed(p), p.evidence_refs) for p in probes.probes],
        ),
    ]
    failed_checks = [(p.probe_id, c) for p in probes.probes for c in p.checks if c.passed is False]
    if failed_checks:
        out += ["Failed checks:", ""]
        out += _table(
            ["probe", "check", "expected", "observed"], [(p, c.name, c.expected, c.observed) for p, c in failed_checks]
        )
    out += [
        "## Authority inventory",
        "",
        "### Tools",
        "",
        *_table(
            ["tool", "scopes", "read-only", "destructive", "idempotent", "open world"],
            [(t.name, t.scopes, t.read_only, t.destructive, t.idempotent, t.open_world) for t in inv.tools],
        ),
        "### Principals",
        "",
        *_table(["name", "kind", "scopes", "status"], [(p.name, p.kind, p.scopes, p.status) for p in inv.principals]),
        "### Intake keys",
        "",
        *_table(
            ["key", "project", "source", "scopes", "status"],
            [(k.key_id, k.project_id, k.source_id, k.scopes, k.status) for k in inv.intake_keys],
        ),
        "### Destinations",
        "",
        *_table(
            ["destination", "kind", "external", "ready", "approval by default", "fails closed", "reasons"],
            [
                (
                    d.destination_id,
                    d.kind,
                    d.external,
                    d.ready,
                    d.approval_required_by_default,
                    d.fails_closed,
                    d.readiness_reasons,
                )
                for d in inv.destinations
            ],
        ),
        "### Routes",
        "",
        *_table(
            ["route", "destination", "priority", "approval policy", "approval (low / high risk)", "match"],
            [
                (
                    r.route_id or "(default)",
                    r.destination_id,
                    r.priority,
                    r.approval_policy.value,
                    f"{r.approval_required_low_risk} / {r.approval_required_high_risk}",
                    "; ".join(f"{k}={v}" for k, v in r.match.items()) or "any",
                )
                for r in inv.routes
            ],
        ),
        "### Outbound MCP servers",
        "",
        *_table(
            ["destination", "server", "tool", "transport", "allowed tools"],
            [(s.destination_id, s.server, s.tool, s.transport, s.allowed_tools) for s in inv.outbound_mcp_servers],
        ),
        "### Approval policy",
        "",
        *_table(
            ["setting", "value"],
            [
                ("ttl_minutes", inv.approval_policies.ttl_minutes),
                ("require_approval_for_high_risk", inv.approval_policies.require_approval_for_high_risk),
                ("default destination", inv.approval_policies.default_destination_id),
                ("destinations requiring approval", inv.approval_policies.destinations_requiring_approval),
                ("approvers", inv.approval_policies.approver_principals),
            ],
        ),
        "## Deployment cards",
        "",
        *_table(
            ["card", "owner", "team", "autonomy", "tools", "destinations", "missing"],
            [
                (
                    c.card_id,
                    c.owner,
                    c.accountable_team,
                    c.autonomy_level,
                    len(c.authority.tools),
                    c.authority.destinations,
                    c.missing_fields,
                )
                for c in cards.cards
            ],
        ),
    ]
    return "\n".join(out).rstrip() + "\n"


async def assemble_report(monitor: Monitor, tools: Sequence[ToolEntry]) -> AssessmentReport:
    # A short read of its own, so the database is not held while the probes run.
    with monitor.session() as session:
        evidence = collect_evidence(monitor, session, tools)
    posture = evaluate(evidence)
    probes = await run_probes(monitor, evidence.inventory)
    cards = build_cards(monitor.config, evidence.inventory)
    summary = {
        "tools": len(evidence.inventory.tools),
        "principals": len(evidence.inventory.principals),
        "intake_keys": len(evidence.inventory.intake_keys),
        "destinations": len(evidence.inventory.destinations),
        "routes": len(evidence.inventory.routes),
        "outbound_mcp_servers": len(evidence.inventory.outbound_mcp_servers),
        **{f"findings_{s.value}": posture.counts[s.value] for s in Severity},
        **{f"probes_{k}": v for k, v in probes.counts.items()},
        "deployment_cards": len(cards.cards),
        "incomplete_cards": sum(1 for c in cards.cards if c.missing_fields),
    }
    report = AssessmentReport(
        generated_at=evidence.inventory.generated_at,
        policy_version=evidence.inventory.policy_version,
        summary=summary,
        recommendations=_recommendations(posture.findings, probes),
        inventory=evidence.inventory,
        posture=posture,
        probes=probes,
        cards=cards,
        markdown="",
    )
    report.markdown = render_markdown(report)
    return report


async def build_assessment_report(
    monitor: Monitor, principal: Principal, tools: Sequence[ToolEntry]
) -> AssessmentReport:
    # defer_unit: the write turn is taken for the audit row at the end, never held across the probes' awaits.
    with governed_call(monitor, principal, "build_assessment_report", {}, defer_unit=True) as call:
        report = await assemble_report(monitor, tools)
        call.notes.append(f"findings {report.posture.counts}; probes {report.probes.counts}")
        return report
