"""Scopes and the tool → scope contract (DESIGN.md). Unknown tools and scopes fail closed."""

from __future__ import annotations

from collections.abc import Iterable

READ = "incident_monitor:read"
REPORT = "incident_monitor:report"
TRIAGE = "incident_monitor:triage"
ROUTE_PREVIEW = "incident_monitor:route_preview"
APPROVAL_REQUEST = "incident_monitor:approval_request"
APPROVE = "incident_monitor:approve"
PUBLISH = "incident_monitor:publish"
RESOLVE = "incident_monitor:resolve"
GOVERNANCE = "incident_monitor:governance"
ADMIN = "incident_monitor:admin"
DOWNSTREAM_READ = "incident_monitor:downstream_read"
CODE_CHANGE = "incident_monitor:code_change"

ALL_SCOPES = frozenset(
    {
        READ,
        REPORT,
        TRIAGE,
        ROUTE_PREVIEW,
        APPROVAL_REQUEST,
        APPROVE,
        PUBLISH,
        RESOLVE,
        GOVERNANCE,
        ADMIN,
        DOWNSTREAM_READ,
        CODE_CHANGE,
    }
)

DEFAULT_AGENT_SCOPES = frozenset({READ, REPORT, TRIAGE, ROUTE_PREVIEW, APPROVAL_REQUEST, PUBLISH})
OPERATOR_SCOPES = frozenset({READ, APPROVE, RESOLVE, GOVERNANCE, ADMIN})

# Every governed action and the scopes it needs. MCP tools and CLI actions share this table.
ACTION_SCOPES: dict[str, frozenset[str]] = {
    "get_status": frozenset({READ}),
    "report_incident": frozenset({REPORT}),
    "list_incidents": frozenset({READ}),
    "get_incident": frozenset({READ}),
    "list_drafts": frozenset({READ}),
    "get_draft": frozenset({READ}),
    "triage_draft": frozenset({TRIAGE}),
    "preview_route": frozenset({ROUTE_PREVIEW}),
    "request_approval": frozenset({APPROVAL_REQUEST}),
    "decide_approval": frozenset({APPROVE}),
    "list_approvals": frozenset({READ}),
    "publish_draft": frozenset({PUBLISH}),
    "list_receipts": frozenset({READ}),
    # Operator CLI reads (no MCP tool): one approval, one receipt, a draft with its route preview.
    "get_approval": frozenset({READ}),
    "get_receipt": frozenset({READ}),
    "review_draft": frozenset({READ}),
    "resolve_incident": frozenset({RESOLVE}),
    "manage_tokens": frozenset({ADMIN}),
    "verify_audit": frozenset({GOVERNANCE}),
    "read_audit": frozenset({GOVERNANCE}),
    # Governance evidence (service/governance/): read-only or dry-run, operators and auditors only.
    "get_authority_inventory": frozenset({GOVERNANCE}),
    "run_posture_checks": frozenset({GOVERNANCE}),
    "run_assessment_probes": frozenset({GOVERNANCE}),
    "build_assessment_report": frozenset({GOVERNANCE}),
    "build_deployment_cards": frozenset({GOVERNANCE}),
    "enable_destination": frozenset({ADMIN}),
    "manage_intake_keys": frozenset({ADMIN}),
    # Log sources (service/log_sources.py): reading their state, and the operator's admin actions on them.
    "list_sources": frozenset({READ}),
    "reset_source_offset": frozenset({ADMIN}),
    "replay_source": frozenset({ADMIN}),
    # Evidence lifecycle (issue 12): the audit key, exports of the evidence, retention.
    "rotate_audit_key": frozenset({ADMIN}),
    "export_evidence": frozenset({GOVERNANCE}),
    "apply_retention": frozenset({ADMIN}),
    # Code changes delegated to a coding-agent platform (issue 15); launches go through publish_draft.
    "request_code_change": frozenset({CODE_CHANGE}),
    "follow_up_code_change": frozenset({CODE_CHANGE}),
    "stop_code_change": frozenset({CODE_CHANGE}),
    "get_code_change": frozenset({READ}),
    "list_code_changes": frozenset({READ}),
    "ping_destination": frozenset({ADMIN}),
}


# A guarded downstream's tool as agents see it: ``<downstream id>__<tool>`` (our own names have no "__").
DOWNSTREAM_SEPARATOR = "__"


def is_downstream_tool(action: str) -> bool:
    return DOWNSTREAM_SEPARATOR in action


def required_scopes(action: str) -> frozenset[str] | None:
    """The scopes an action needs, or None for an unknown action (which is always denied).

    A downstream tool needs ``downstream_read``; whether it is allowlisted is the scope gate's check.
    """
    if is_downstream_tool(action):
        return frozenset({DOWNSTREAM_READ})
    return ACTION_SCOPES.get(action)


def parse_scopes(values: Iterable[str]) -> frozenset[str]:
    """Validate scope names; a short name like ``read`` means ``incident_monitor:read``."""
    scopes: set[str] = set()
    for raw in values:
        value = raw.strip()
        if not value:
            continue
        scope = value if ":" in value else f"incident_monitor:{value}"
        if scope not in ALL_SCOPES:
            known = ", ".join(sorted(s.split(":", 1)[1] for s in ALL_SCOPES))
            raise ValueError(f"unknown scope '{value}'; known scopes: {known}")
        scopes.add(scope)
    if not scopes:
        raise ValueError("at least one scope is required (for example: read,report)")
    return frozenset(scopes)
