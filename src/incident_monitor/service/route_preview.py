"""Route preview: where a draft (or a report not yet sent) would publish, and what it would need."""

from __future__ import annotations

from incident_monitor.domain.enums import Severity
from incident_monitor.domain.levels import LEVEL_SEVERITY
from incident_monitor.domain.models import Draft
from incident_monitor.errors import InvalidInput
from incident_monitor.policy.principal import Principal
from incident_monitor.policy.route_decision import RouteDecision, RouteSubject, decide_route
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.queries import get_draft_row


def subject_for_draft(draft: Draft) -> RouteSubject:
    inc = draft.evidence["incident"]
    return RouteSubject(
        severity=draft.severity,
        baseline_severity=LEVEL_SEVERITY.get(inc.get("level", ""), Severity.critical),
        route_tags=tuple(draft.route_tags),
        risk_category=inc.get("risk_category"),
        source=inc.get("source"),
        project_id=inc.get("project_id"),
        event=inc.get("event"),
    )


def decide_for_draft(monitor: Monitor, draft: Draft) -> RouteDecision:
    """The decision publish and approval use; preview with a draft_id calls exactly this."""
    return decide_route(monitor.config, subject_for_draft(draft), monitor.readiness)


def preview_route(
    monitor: Monitor,
    principal: Principal,
    *,
    draft_id: str | None = None,
    route_tags: list[str] | None = None,
    risk_category: str | None = None,
    risk_level: Severity | None = None,
    level: str | None = None,
    source: str | None = None,
    project_id: str | None = None,
    event: str | None = None,
) -> RouteDecision:
    arguments = {
        "draft_id": draft_id,
        "route_tags": route_tags,
        "risk_category": risk_category,
        "risk_level": risk_level,
        "level": level,
        "source": source,
        "project_id": project_id,
        "event": event,
    }
    with governed_call(monitor, principal, "preview_route", arguments, subject_id=draft_id) as call:
        if draft_id is not None:
            decision = decide_for_draft(monitor, get_draft_row(call.session, draft_id))
        else:
            if level is not None and level.lower() not in LEVEL_SEVERITY:
                raise InvalidInput("level: not a known level; use critical, error, warning or info")
            level_severity = LEVEL_SEVERITY[level.lower()] if level else None
            subject = RouteSubject(
                severity=Severity.highest(level_severity, risk_level),
                baseline_severity=Severity.highest(level_severity),
                route_tags=tuple(route_tags or ()),
                risk_category=risk_category,
                source=source,
                project_id=project_id,
                event=event,
            )
            decision = decide_route(monitor.config, subject, monitor.readiness)
        call.notes.append(
            f"preview: {decision.destination_id or 'no destination'}, approval_required={decision.approval_required}, "
            f"blocked={decision.blocked}"
        )
        return decision
