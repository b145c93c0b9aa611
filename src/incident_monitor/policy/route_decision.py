"""The one routing decision, shared by route preview and publish.

Preview and publish call ``decide_route`` with the same inputs, so a preview never says "allowed"
where publish would block. Pure: readiness comes in as a function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from pydantic import BaseModel

from incident_monitor.config import ApprovalSettings, DestinationSettings, MonitorConfig, Route
from incident_monitor.domain.code_change import CODE_CHANGE_EVENTS
from incident_monitor.domain.enums import ApprovalPolicy, Severity
from incident_monitor.domain.readiness import Readiness


@dataclass(frozen=True, slots=True)
class RouteSubject:
    """The fields routing looks at, from a draft or from a preview request."""

    severity: Severity
    route_tags: tuple[str, ...] = ()
    risk_category: str | None = None
    source: str | None = None
    project_id: str | None = None
    event: str | None = None
    # The severity without the report's own risk claim. A reporter's risk_level may raise the
    # approval requirement, never lower it (e.g. by steering to a `never` route for critical).
    baseline_severity: Severity | None = None


class RouteDecision(BaseModel):
    route_id: str | None  # the matched route; None when the default policy (or nothing) applied
    match_reason: str
    destination_id: str | None
    destination_kind: str | None
    approval_required: bool
    approval_reasons: list[str]
    blocked: bool
    blocked_reasons: list[str]
    policy_version: str


def _match(route: Route, subject: RouteSubject) -> list[str] | None:
    """Why the route matches (one phrase per criterion), or None when it does not."""
    m = route.match
    why: list[str] = []
    if m.route_tags:
        overlap = sorted(set(m.route_tags) & set(subject.route_tags))
        if not overlap:
            return None
        why.append(f"route_tags overlap {overlap}")
    checks: list[tuple[str, list[str], str | None]] = [
        ("risk_category", m.risk_categories, subject.risk_category),
        ("severity", [s.value for s in m.severities], subject.severity.value),
        ("source", m.sources, subject.source),
        ("project", m.projects, subject.project_id),
        ("event", m.events, subject.event),
    ]
    for name, allowed, value in checks:
        if allowed:
            if value not in allowed:
                return None
            why.append(f"{name} {value!r}")
    return why or ["catch-all route"]


def is_coding_agent(config: MonitorConfig, destination_id: str) -> bool:
    destination = config.destination(destination_id)
    return destination is not None and destination.kind == "coding_agent"


def approval_requirement(
    policy: ApprovalPolicy,
    destination: DestinationSettings | None,
    severity: Severity,
    settings: ApprovalSettings,
) -> tuple[bool, list[str]]:
    """DESIGN.md "When approval is required": the first rule that applies decides; fail closed."""
    high_risk = severity.rank >= Severity.high.rank
    if destination is None:
        return True, ["no destination: approval required (fail closed)"]
    if policy is ApprovalPolicy.always:
        return True, ["route approval_policy is 'always'"]
    if policy is ApprovalPolicy.never:
        return False, ["route approval_policy is 'never' (no human review before publish)"]
    if policy is ApprovalPolicy.high_risk:
        if high_risk:
            return True, [f"route approval_policy is 'high_risk' and severity is {severity.value}"]
        return False, [f"route approval_policy is 'high_risk' and severity is only {severity.value}"]
    reasons: list[str] = []
    if destination.approval_required_by_default:
        reasons.append(f"destination '{destination.id}' ({destination.kind}) requires approval")
    if high_risk and settings.require_approval_for_high_risk:
        reasons.append(f"severity {severity.value} requires approval (require_approval_for_high_risk)")
    return bool(reasons), reasons or [f"destination '{destination.id}' does not require approval"]


def decide_route(config: MonitorConfig, subject: RouteSubject, readiness: Callable[[str], Readiness]) -> RouteDecision:
    decision = _decide(config, subject, readiness)
    if subject.baseline_severity is None or subject.baseline_severity == subject.severity:
        return decision
    baseline = _decide(config, replace(subject, severity=subject.baseline_severity), readiness)
    if baseline.approval_required and not decision.approval_required:
        reasons = [
            f"without the report's risk_level (severity {subject.baseline_severity.value}): {reason}"
            for reason in baseline.approval_reasons
        ]
        return decision.model_copy(update={"approval_required": True, "approval_reasons": reasons})
    return decision


def _decide(config: MonitorConfig, subject: RouteSubject, readiness: Callable[[str], Readiness]) -> RouteDecision:
    # Code-change drafts go only to coding-agent platforms, and nothing else does (issue 15).
    code_change = subject.event in CODE_CHANGE_EVENTS
    candidates: list[tuple[int, int, Route, list[str]]] = []
    for order, route in enumerate(config.routes):
        why = _match(route, subject)
        if why is not None and is_coding_agent(config, route.destination_id) == code_change:
            candidates.append((-route.priority, order, route, why))
    policy: ApprovalPolicy
    agents = [d.id for d in config.destinations if d.kind == "coding_agent"]
    if candidates:
        _, _, route, why = min(candidates, key=lambda c: (c[0], c[1]))
        route_id: str | None = route.id
        destination_id: str | None = route.destination_id
        policy = route.approval_policy
        match_reason = f"route '{route.id}' (priority {route.priority}): " + "; ".join(why)
    elif code_change:
        route_id, policy = None, ApprovalPolicy.always
        destination_id = agents[0] if len(agents) == 1 else None
        match_reason = (
            "no route matched: the only coding_agent destination"
            if destination_id
            else f"no route matched and {len(agents)} coding_agent destinations are configured: add a route"
        )
    elif config.default_destination is not None and not is_coding_agent(
        config, config.default_destination.destination_id
    ):
        route_id = None
        destination_id = config.default_destination.destination_id
        policy = config.default_destination.approval_policy
        match_reason = "no route matched: default destination policy"
    else:
        route_id, destination_id, policy = None, None, ApprovalPolicy.always
        match_reason = "no route matched and no default destination is configured"

    destination = config.destination(destination_id) if destination_id else None
    blocked_reasons: list[str] = []
    if destination_id is None and code_change and agents:
        blocked_reasons.append(
            f"{len(agents)} coding_agent destinations and no route to one matches: add a route to the one to use"
        )
    elif destination_id is None and code_change:
        blocked_reasons.append(
            "no coding_agent destination to launch on: add [[destinations]] with kind = 'coding_agent', base_url "
            "and token = 'env:NAME' to the config"
        )
    elif destination_id is None:
        blocked_reasons.append("no route matches and no default destination is configured")
    elif destination is None:
        blocked_reasons.append(f"destination '{destination_id}' is not configured")
    else:
        if not destination.enabled:
            blocked_reasons.append(f"destination '{destination.id}' is disabled")
        else:
            ready = readiness(destination.id)
            if not ready.ready:
                blocked_reasons.extend(f"destination '{destination.id}' not ready: {r}" for r in ready.reasons)
        if destination.allowed_sources and subject.source not in destination.allowed_sources:
            blocked_reasons.append(f"source {subject.source!r} is not allowed to publish to '{destination.id}'")
        project = config.project(subject.project_id)
        if project is not None and project.allowed_destinations and destination.id not in project.allowed_destinations:
            blocked_reasons.append(
                f"project '{project.id}' may publish only to {', '.join(project.allowed_destinations)}, "
                f"not to '{destination.id}' (projects.allowed_destinations)"
            )

    if code_change:
        policy = ApprovalPolicy.always  # a code change is always reviewed (config refuses 'never' for one)
    required, approval_reasons = approval_requirement(policy, destination, subject.severity, config.approval)
    return RouteDecision(
        route_id=route_id,
        match_reason=match_reason,
        destination_id=destination_id,
        destination_kind=destination.kind if destination else None,
        approval_required=required,
        approval_reasons=approval_reasons,
        blocked=bool(blocked_reasons),
        blocked_reasons=blocked_reasons,
        policy_version=config.policy_version,
    )
