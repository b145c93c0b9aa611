"""The authority inventory: who can do what, and where evidence can go.

Redacted by construction: it lists names, scopes, states and policies — never token or key
material, hashes, secret references or destination config values (URLs, paths, commands).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field
from sqlmodel import Session, col, select

from incident_monitor.config import MonitorConfig, Route
from incident_monitor.destinations.settings import EXTERNAL_KINDS, McpToolConfig
from incident_monitor.domain.enums import ApprovalPolicy, Severity
from incident_monitor.domain.models import ApiToken, Incident, IntakeKey, IntakeKeyBase
from incident_monitor.domain.readiness import Readiness
from incident_monitor.policy.principal import LOCAL_AGENT, Principal, local_operator
from incident_monitor.policy.redaction import redact_text
from incident_monitor.policy.route_decision import RouteSubject, approval_requirement, decide_route
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.publishing import RECOVERY_PRINCIPAL
from incident_monitor.service.self_monitoring import SELF_MONITOR
from incident_monitor.service.tokens import token_status

HIGH_RISK = frozenset({Severity.high, Severity.critical})
INVENTORY_SECTIONS = (
    "tools",
    "principals",
    "intake_keys",
    "destinations",
    "routes",
    "outbound_mcp_servers",
    "approval_policies",
    "projects",
    "sources",
)


class ToolEntry(BaseModel):
    name: str
    scopes: list[str]
    read_only: bool
    destructive: bool
    idempotent: bool
    open_world: bool


class PrincipalEntry(BaseModel):
    name: str
    kind: Literal["token", "local-agent", "operator", "system"]
    scopes: list[str]
    status: Literal["active", "expired", "revoked", "built-in"]
    description: str = ""
    created_at: datetime | None = None
    expires_at: datetime | None = None
    last_used_at: datetime | None = None


class IntakeKeyEntry(BaseModel):
    key_id: str
    project_id: str | None
    source_id: str | None
    scopes: list[str]
    status: Literal["active", "disabled"]
    created_at: datetime | None = None
    disabled_at: datetime | None = None
    last_used_at: datetime | None = None


class DestinationEntry(BaseModel):
    destination_id: str
    kind: str
    external: bool
    enabled: bool
    ready: bool
    readiness_reasons: list[str]
    approval_required_by_default: bool
    allowed_sources: list[str]
    policy_flags: dict[str, bool] = Field(description="The destination's allow_* switches (egress policy).")
    route_ids: list[str]
    is_default: bool
    fails_closed: bool = Field(description="Every route to it is blocked while it is not ready.")


class RouteEntry(BaseModel):
    route_id: str | None = Field(description="None for the default destination policy.")
    is_default: bool = False
    destination_id: str
    destination_kind: str | None
    external: bool
    priority: int
    approval_policy: ApprovalPolicy
    match: dict[str, list[str]]
    labels: list[str]
    can_carry_high_risk: bool
    approval_required_low_risk: bool
    approval_required_high_risk: bool


class OutboundMcpServerEntry(BaseModel):
    destination_id: str
    server: str | None
    tool: str | None
    transport: Literal["stdio", "http"]
    allowed_tools: list[str] = Field(description="The tool allowlist; empty means none is set.")


class ApprovalPolicies(BaseModel):
    policy_version: str
    ttl_minutes: int
    require_approval_for_high_risk: bool
    default_destination_id: str | None
    default_approval_policy: ApprovalPolicy | None
    destinations_requiring_approval: list[str]
    route_policies: dict[str, ApprovalPolicy]
    approver_principals: list[str] = Field(description="Principals holding incident_monitor:approve.")


class ProjectEntry(BaseModel):
    project_id: str
    name: str | None = None
    sources: list[str] = Field(default_factory=list)
    default_route_tags: list[str] = Field(default_factory=list)
    allowed_destinations: list[str] = Field(default_factory=list)


class AuthorityInventory(BaseModel):
    generated_at: datetime
    policy_version: str
    tools: list[ToolEntry]
    principals: list[PrincipalEntry]
    intake_keys: list[IntakeKeyEntry]
    destinations: list[DestinationEntry]
    routes: list[RouteEntry]
    outbound_mcp_servers: list[OutboundMcpServerEntry]
    approval_policies: ApprovalPolicies
    projects: list[ProjectEntry]
    sources: list[str] = Field(
        description="Monitored sources: seen in reports or named by routes, destinations, projects."
    )


# --- helpers shared with posture and probes ---------------------------------------------------------


def subject_for_route(route: Route, severity: Severity) -> RouteSubject:
    """A report the route matches (first value of each criterion), at the given severity."""
    m = route.match
    if m.severities and severity not in m.severities:
        severity = m.severities[0]
    return RouteSubject(
        severity=severity,
        baseline_severity=severity,
        route_tags=tuple(m.route_tags[:1]),
        risk_category=m.risk_categories[0] if m.risk_categories else None,
        source=m.sources[0] if m.sources else None,
        project_id=m.projects[0] if m.projects else None,
        event=m.events[0] if m.events else None,
    )


def _not_ready(destination_id: str, readiness: Callable[[str], Readiness]) -> Callable[[str], Readiness]:
    def check(other: str) -> Readiness:
        if other == destination_id:
            return Readiness(ready=False, reasons=["inventory check: assumed not ready"])
        return readiness(other)

    return check


def fails_closed(config: MonitorConfig, destination_id: str, readiness: Callable[[str], Readiness]) -> bool:
    """With this destination not ready, is every decision that picks it blocked? (Uses the real routing.)"""
    forced = _not_ready(destination_id, readiness)
    subjects = [subject_for_route(r, Severity.low) for r in config.routes if r.destination_id == destination_id]
    if config.default_destination and config.default_destination.destination_id == destination_id:
        # A subject no route is likely to claim reaches the default policy.
        subjects.append(RouteSubject(severity=Severity.low, baseline_severity=Severity.low, event="inventory.probe"))
    for subject in subjects:
        decision = decide_route(config, subject, forced)
        if decision.destination_id == destination_id and not decision.blocked:
            return False
    return True


def route_entries(config: MonitorConfig) -> list[RouteEntry]:
    entries: list[RouteEntry] = []
    pairs: list[tuple[Route | None, str, ApprovalPolicy]] = [
        (r, r.destination_id, r.approval_policy) for r in config.routes
    ]
    if config.default_destination:
        pairs.append((None, config.default_destination.destination_id, config.default_destination.approval_policy))
    for route, destination_id, policy in pairs:
        destination = config.destination(destination_id)
        low, _ = approval_requirement(policy, destination, Severity.low, config.approval)
        high, _ = approval_requirement(policy, destination, Severity.critical, config.approval)
        severities = set(route.match.severities) if route else set()
        entries.append(
            RouteEntry(
                route_id=route.id if route else None,
                is_default=route is None,
                destination_id=destination_id,
                destination_kind=destination.kind if destination else None,
                external=bool(destination and destination.kind in EXTERNAL_KINDS),
                priority=route.priority if route else 0,
                approval_policy=policy,
                match={k: [str(v) for v in vals] for k, vals in route.match.model_dump().items() if vals}
                if route
                else {},
                labels=list(route.labels) if route else [],
                can_carry_high_risk=not severities or bool(severities & HIGH_RISK),
                approval_required_low_risk=low,
                approval_required_high_risk=high,
            )
        )
    return entries


def is_usable(entry: PrincipalEntry) -> bool:
    """Can this principal still act? Active tokens and the built-in principals can."""
    return entry.status in ("active", "built-in")


def _principals(session: Session, now: datetime) -> list[PrincipalEntry]:
    builtins: list[tuple[Principal, Literal["local-agent", "operator", "system"], str]] = [
        (LOCAL_AGENT, "local-agent", "stdio without INCIDENT_MONITOR_TOKEN"),
        (local_operator(), "operator", "the CLI at this machine"),
        (SELF_MONITOR, "system", "records self-monitoring incidents"),
        (RECOVERY_PRINCIPAL, "system", "finishes publishes a crash left pending"),
    ]
    entries = [
        PrincipalEntry(name=p.name, kind=kind, scopes=sorted(p.scopes), status="built-in", description=why)
        for p, kind, why in builtins
    ]
    for row in session.exec(select(ApiToken).order_by(col(ApiToken.created_at))).all():
        entries.append(
            PrincipalEntry(
                name=row.name,
                kind="token",
                scopes=sorted(row.scopes),
                status=token_status(row, now),
                created_at=row.created_at,
                expires_at=row.expires_at,
                last_used_at=row.last_used_at,
            )
        )
    return entries


def intake_key_entries(rows: Iterable[IntakeKeyBase]) -> list[IntakeKeyEntry]:
    """Intake-key rows → entries: names, bindings, scopes and dates only (the hash is never read)."""
    return [
        IntakeKeyEntry(
            key_id=row.key_id,
            project_id=row.project_id,
            source_id=row.source_id,
            scopes=sorted(row.scopes),
            status="disabled" if row.disabled_at else "active",
            created_at=row.created_at,
            disabled_at=row.disabled_at,
            last_used_at=row.last_used_at,
        )
        for row in rows
    ]


def _intake_keys(session: Session) -> list[IntakeKeyEntry]:
    return intake_key_entries(session.exec(select(IntakeKey).order_by(col(IntakeKey.created_at))).all())


def outbound_mcp_servers(config: MonitorConfig) -> list[OutboundMcpServerEntry]:
    """MCP-tool destinations: server and tool names and the allowlist — never commands, URLs or headers."""
    return [
        OutboundMcpServerEntry(
            destination_id=destination.id,
            server=destination.server,
            tool=destination.tool,
            transport="stdio" if destination.command else "http",
            allowed_tools=list(destination.allowed_tools),
        )
        for destination in config.destinations
        if isinstance(destination, McpToolConfig)
    ]


def project_entries(config: MonitorConfig) -> list[ProjectEntry]:
    return [
        ProjectEntry(
            project_id=p.id,
            name=p.name,
            sources=list(p.sources),
            default_route_tags=list(p.default_route_tags),
            allowed_destinations=list(p.allowed_destinations),
        )
        for p in config.projects
    ]


def _sources(session: Session, config: MonitorConfig, projects: list[ProjectEntry]) -> list[str]:
    seen = set(session.exec(select(Incident.source).distinct()).all())
    for route in config.routes:
        seen.update(route.match.sources)
    for destination in config.destinations:
        seen.update(destination.allowed_sources)
    for project in projects:
        seen.update(project.sources)
    seen.update(c.subject for c in config.deployment_cards if c.kind == "source")
    seen.discard(config.self_monitoring.source)  # the monitor's own incidents: its card covers them
    return sorted(seen)


def collect_inventory(monitor: Monitor, session: Session, tools: Sequence[ToolEntry]) -> AuthorityInventory:
    config = monitor.config
    now = monitor.clock()
    routes = route_entries(config)
    default_id = config.default_destination.destination_id if config.default_destination else None
    destinations: list[DestinationEntry] = []
    for d in config.destinations:
        readiness = monitor.readiness(d.id)
        reasons = [redact_text(r) for r in readiness.reasons] if d.enabled else ["disabled in config"]
        destinations.append(
            DestinationEntry(
                destination_id=d.id,
                kind=d.kind,
                external=d.kind in EXTERNAL_KINDS,
                enabled=d.enabled,
                ready=d.enabled and readiness.ready,
                readiness_reasons=reasons,
                approval_required_by_default=d.approval_required_by_default,
                allowed_sources=list(d.allowed_sources),
                policy_flags={
                    name: value
                    for name, value in d.model_dump().items()
                    if name.startswith("allow_") and isinstance(value, bool)
                },
                route_ids=[r.id for r in config.routes if r.destination_id == d.id],
                is_default=d.id == default_id,
                fails_closed=fails_closed(config, d.id, monitor.readiness),
            )
        )
    principals = _principals(session, now)
    projects = project_entries(config)
    return AuthorityInventory(
        generated_at=now,
        policy_version=config.policy_version,
        tools=list(tools),
        principals=principals,
        intake_keys=_intake_keys(session),
        destinations=destinations,
        routes=routes,
        outbound_mcp_servers=outbound_mcp_servers(config),
        approval_policies=ApprovalPolicies(
            policy_version=config.policy_version,
            ttl_minutes=config.approval.ttl_minutes,
            require_approval_for_high_risk=config.approval.require_approval_for_high_risk,
            default_destination_id=default_id,
            default_approval_policy=config.default_destination.approval_policy if config.default_destination else None,
            destinations_requiring_approval=[d.id for d in config.destinations if d.approval_required_by_default],
            route_policies={r.id: r.approval_policy for r in config.routes},
            approver_principals=[p.name for p in principals if "incident_monitor:approve" in p.scopes and is_usable(p)],
        ),
        projects=projects,
        sources=_sources(session, config, projects),
    )


def get_authority_inventory(
    monitor: Monitor, principal: Principal, tools: Sequence[ToolEntry], *, section: str | None = None
) -> AuthorityInventory:
    """The whole inventory (``section`` only names what the caller asked for, in the audit row)."""
    with governed_call(monitor, principal, "get_authority_inventory", {"section": section}) as call:
        return collect_inventory(monitor, call.session, tools)
