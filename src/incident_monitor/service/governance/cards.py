"""Deployment cards: one per agent principal, per monitored source, and one for the monitor itself.

Authority (tools, destinations, routes) is derived from the inventory; ownership and the other
human facts come from ``[[deployment_cards]]`` in the config. A required fact left out is a finding.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from incident_monitor.config import DeploymentCardSettings, MonitorConfig
from incident_monitor.domain.enums import Severity
from incident_monitor.policy.principal import Principal
from incident_monitor.policy.scopes import APPROVAL_REQUEST, APPROVE, PUBLISH, REPORT, ROUTE_PREVIEW, TRIAGE
from incident_monitor.service.governance.findings import Finding, sort_findings
from incident_monitor.service.governance.inventory import (
    AuthorityInventory,
    PrincipalEntry,
    ToolEntry,
    collect_inventory,
    is_usable,
)
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor

REQUIRED_CARD_FIELDS = (
    "owner",
    "accountable_team",
    "autonomy_level",
    "data_classification",
    "escalation",
    "review_cadence",
)
CARD_RULE_ID = "deployment-card-incomplete"
ALWAYS_PROHIBITED = [
    "call GitHub, Linear, webhook or MCP destinations directly (publish only through publish_draft)",
    "approve its own approval request",
]

SubjectKind = Literal["agent", "source", "monitor"]


class CardAuthority(BaseModel):
    tools: list[str]
    destinations: list[str]
    routes: list[str]


class DeploymentCard(BaseModel):
    card_id: str
    subject_kind: SubjectKind
    subject: str
    configured: bool
    owner: str | None
    accountable_team: str | None
    autonomy_level: str | None
    allowed_actions: list[str]
    prohibited_actions: list[str]
    authority: CardAuthority
    data_classification: str | None
    approval: str
    escalation: str | None
    known_limitations: list[str]
    residual_risks: list[str]
    review_cadence: str | None
    missing_fields: list[str]


class DeploymentCards(BaseModel):
    generated_at: datetime
    cards: list[DeploymentCard]
    findings: list[Finding]


# Scopes of the agent side of the flow; a token holding none of them is an operator's or an auditor's.
AGENT_ACTION_SCOPES = frozenset({REPORT, TRIAGE, ROUTE_PREVIEW, APPROVAL_REQUEST, PUBLISH})


def is_agent(entry: PrincipalEntry) -> bool:
    """Agent principals: the local agent and every usable token that can act in the agent flow."""
    if entry.kind == "local-agent":
        return True
    return entry.kind == "token" and is_usable(entry) and bool(AGENT_ACTION_SCOPES & set(entry.scopes))


def _approval_text(inventory: AuthorityInventory) -> str:
    policies = inventory.approval_policies
    approvers = ", ".join(policies.approver_principals) or "nobody (no principal holds approve)"
    needing = ", ".join(policies.destinations_requiring_approval) or "none"
    return (
        f"destinations requiring approval: {needing}; high-risk drafts "
        f"{'need' if policies.require_approval_for_high_risk else 'do not need'} approval; approvers: {approvers}; "
        f"approvals expire after {policies.ttl_minutes} min and are used once"
    )


def _card(
    kind: SubjectKind,
    subject: str,
    settings: DeploymentCardSettings | None,
    authority: CardAuthority,
    inventory: AuthorityInventory,
    *,
    derived_allowed: list[str],
    derived_prohibited: list[str],
    derived_risks: list[str],
    derived_limitations: list[str],
) -> DeploymentCard:
    facts = settings.model_dump() if settings else {}
    missing = [name for name in REQUIRED_CARD_FIELDS if not facts.get(name)]
    return DeploymentCard(
        card_id=f"{kind}:{subject}",
        subject_kind=kind,
        subject=subject,
        configured=settings is not None,
        owner=facts.get("owner"),
        accountable_team=facts.get("accountable_team"),
        autonomy_level=facts.get("autonomy_level"),
        allowed_actions=[*derived_allowed, *facts.get("allowed_actions", [])],
        prohibited_actions=[*derived_prohibited, *facts.get("prohibited_actions", [])],
        authority=authority,
        data_classification=facts.get("data_classification"),
        approval=_approval_text(inventory),
        escalation=facts.get("escalation"),
        known_limitations=[*derived_limitations, *facts.get("known_limitations", [])],
        residual_risks=[*derived_risks, *facts.get("residual_risks", [])],
        review_cadence=facts.get("review_cadence"),
        missing_fields=missing,
    )


def _reachable_destinations(inventory: AuthorityInventory, source: str | None = None) -> tuple[list[str], list[str]]:
    """Routes (and the default) a report could take, and their enabled destinations."""
    enabled = {d.destination_id: d for d in inventory.destinations if d.enabled}
    routes: list[str] = []
    destinations: set[str] = set()
    for route in inventory.routes:
        if source is not None and route.match.get("sources") and source not in route.match["sources"]:
            continue
        destination = enabled.get(route.destination_id)
        if destination is None or (
            source is not None and destination.allowed_sources and source not in destination.allowed_sources
        ):
            continue
        routes.append(route.route_id or "(default)")
        destinations.add(route.destination_id)
    return routes, sorted(destinations)


def build_cards(config: MonitorConfig, inventory: AuthorityInventory) -> DeploymentCards:
    settings = {(c.kind, c.subject): c for c in config.deployment_cards}
    all_tools = [t.name for t in inventory.tools]
    cards: list[DeploymentCard] = []

    for entry in inventory.principals:
        if not is_agent(entry):
            continue
        scopes = set(entry.scopes)
        tools = [t.name for t in inventory.tools if set(t.scopes) <= scopes]
        routes, destinations = _reachable_destinations(inventory) if PUBLISH in scopes else ([], [])
        risks = []
        if PUBLISH in scopes and APPROVE in scopes:
            risks.append("holds both publish and approve")
        limitations = (
            ["stdio has no transport authentication: whoever starts the client acts as it"]
            if entry.kind == "local-agent"
            else []
        )
        cards.append(
            _card(
                "agent",
                entry.name,
                settings.get(("agent", entry.name)),
                CardAuthority(tools=tools, destinations=destinations, routes=routes),
                inventory,
                derived_allowed=tools,
                derived_prohibited=[*(t for t in all_tools if t not in tools), *ALWAYS_PROHIBITED],
                derived_risks=risks,
                derived_limitations=limitations,
            )
        )

    for source in inventory.sources:
        routes, destinations = _reachable_destinations(inventory, source)
        cards.append(
            _card(
                "source",
                source,
                settings.get(("source", source)),
                CardAuthority(tools=["report_incident"], destinations=destinations, routes=routes),
                inventory,
                derived_allowed=["report incidents (report_incident, or an intake key bound to it)"],
                derived_prohibited=["read incidents or drafts", "preview routes", "publish", "approve"],
                derived_risks=[],
                derived_limitations=[],
            )
        )

    monitor_settings = next((c for c in config.deployment_cards if c.kind == "monitor"), None)
    routes, destinations = _reachable_destinations(inventory)
    cards.append(
        _card(
            "monitor",
            monitor_settings.subject if monitor_settings else "incident-monitor",
            monitor_settings,
            CardAuthority(tools=all_tools, destinations=destinations, routes=routes),
            inventory,
            derived_allowed=[
                "deliver drafts to configured destinations after scope, route, readiness and approval gates",
                "record self-monitoring incidents about denied, blocked and failed actions",
            ],
            derived_prohibited=["publish without a receipt", "act without an audit row", "triage its own incidents"],
            derived_risks=[
                f"destination '{d.destination_id}' is not ready" for d in inventory.destinations if not d.ready
            ],
            derived_limitations=["SQLite: one host; the audit chain detects but cannot prevent tampering"],
        )
    )
    return DeploymentCards(generated_at=inventory.generated_at, cards=cards, findings=card_findings(cards))


def card_findings(cards: Sequence[DeploymentCard]) -> list[Finding]:
    findings = []
    for card in cards:
        if not card.missing_fields:
            continue
        findings.append(
            Finding(
                rule_id=CARD_RULE_ID,
                severity=Severity.high if card.subject_kind == "monitor" else Severity.medium,
                title=f"Deployment card {card.card_id} is missing {len(card.missing_fields)} required field(s)",
                detail=f"missing: {', '.join(card.missing_fields)}",
                evidence_refs=[f"card:{card.card_id}"],
                recommendation=(
                    f"add [[deployment_cards]] with kind = '{card.subject_kind}', subject = '{card.subject}' and "
                    f"{', '.join(card.missing_fields)}"
                ),
            )
        )
    return sort_findings(findings)


def build_deployment_cards(monitor: Monitor, principal: Principal, tools: Sequence[ToolEntry]) -> DeploymentCards:
    with governed_call(monitor, principal, "build_deployment_cards", {}) as call:
        return build_cards(monitor.config, collect_inventory(monitor, call.session, tools))
