"""Read-only views: incidents, drafts, receipts, approvals. Filters and offset paging."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from incident_monitor.domain.enums import ApprovalStatus, DraftStatus, IncidentStatus, Severity
from incident_monitor.domain.io import (
    ApprovalPage,
    ApprovalSummary,
    DraftDetail,
    DraftPage,
    DraftSummary,
    IncidentDetail,
    IncidentPage,
    IncidentSummary,
    OccurrenceView,
    ReceiptPage,
    ReceiptSummary,
    TimelineEvent,
    TriageSummary,
)
from incident_monitor.domain.models import (
    ApprovalRequest,
    ApprovalRequestBase,
    AuditEvent,
    Draft,
    DraftBase,
    Incident,
    IncidentBase,
    IncidentOccurrence,
    Receipt,
    TriageRun,
)
from incident_monitor.errors import InvalidInput, NotFound
from incident_monitor.policy.principal import Principal
from incident_monitor.policy.route_decision import RouteDecision
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor

T = TypeVar("T")


def _page(
    session: Session, query: SelectOfScalar[T], limit: int, offset: int, max_limit: int
) -> tuple[list[T], int | None]:
    if not 1 <= limit <= max_limit:
        raise InvalidInput(f"limit: {limit} is out of range; use 1 to {max_limit} (limits.max_page_size)")
    if offset < 0:
        raise InvalidInput("offset: must be 0 or more; pass the next_offset of the previous page")
    rows = list(session.exec(query.offset(offset).limit(limit + 1)).all())
    next_offset = offset + limit if len(rows) > limit else None
    return rows[:limit], next_offset


def _where_equal(query: SelectOfScalar[T], model: type, filters: dict[str, Any]) -> SelectOfScalar[T]:
    """``column == value`` for every filter given (None means "any")."""
    for name, value in filters.items():
        if value is not None:
            query = query.where(getattr(model, name) == value)
    return query


def get_incident_row(session: Session, incident_id: str) -> Incident:
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise NotFound(f"incident_id: no incident {incident_id!r}; call list_incidents to find one")
    return incident


def get_draft_row(session: Session, draft_id: str) -> Draft:
    draft = session.get(Draft, draft_id)
    if draft is None:
        raise NotFound(f"draft_id: no draft {draft_id!r}; call list_drafts to find one")
    return draft


def run_id_for_draft(session: Session, draft: Draft) -> str | None:
    """The run that last reported the draft's incident: its later decisions join that run's timeline."""
    incident = session.get(Incident, draft.incident_id)
    return incident.last_run_id if incident is not None else None


MAX_TIMELINE_EVENTS = 500


def run_timeline(session: Session, run_id: str | None) -> list[TimelineEvent]:
    """The audit events of one run, oldest first (the latest MAX_TIMELINE_EVENTS of a very long run)."""
    if not run_id:
        return []
    rows = session.exec(
        select(AuditEvent)
        .where(AuditEvent.run_id == run_id)
        .order_by(col(AuditEvent.seq).desc())
        .limit(MAX_TIMELINE_EVENTS)
    ).all()
    return [TimelineEvent.model_validate(r, from_attributes=True) for r in reversed(rows)]


def draft_summary(draft: Draft) -> DraftSummary:
    return DraftSummary.model_validate(draft, from_attributes=True)


def draft_next_step(draft: Draft, *, triaged: bool, route: RouteDecision | None = None) -> str:
    """The one call an agent should make next for ``draft``: always forward in the flow (triage → preview →
    request approval → publish → receipts), never the call that produced it, unless retrying is the step.

    ``route`` is the decision publish would apply (callers that hold it pass it, for a precise answer)."""
    ref = f"draft_id={draft.draft_id}"
    match draft.status:
        case DraftStatus.draft if not triaged:
            return f"call triage_draft with {ref}"
        case DraftStatus.draft if route is None:
            return f"call preview_route with {ref}: it says whether request_approval or publish_draft comes next"
        case DraftStatus.draft if route is not None and route.blocked:
            return (
                f"stop: publishing is blocked ({'; '.join(route.blocked_reasons)}); an operator must fix the route "
                f"or destination, then call preview_route with {ref}"
            )
        case DraftStatus.draft if route is not None and route.approval_required:
            return f"call request_approval with {ref} and a reason"
        case DraftStatus.draft | DraftStatus.approved:
            return f"call publish_draft with {ref}"
        case DraftStatus.approval_required:
            return f"wait: an operator decides the pending approval; then call publish_draft with {ref}"
        case DraftStatus.denied:
            return "stop: an operator denied publishing; keep the evidence and do not publish through another surface"
        case DraftStatus.publishing:
            return f"a publish is in progress; call list_receipts with {ref}"
        case DraftStatus.published:
            return f"published; the receipt: call list_receipts with {ref}"
        case DraftStatus.publish_failed:
            return (
                f"publish failed: call list_receipts with {ref} for the error and get_status for the destination's "
                f"readiness, then publish_draft with {ref} to retry"
            )
    raise AssertionError(f"no next step for draft status {draft.status}")  # every status is matched above


def list_incidents(
    monitor: Monitor,
    principal: Principal,
    *,
    status: IncidentStatus | None = None,
    severity: Severity | None = None,
    source: str | None = None,
    project_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> IncidentPage:
    filters: dict[str, Any] = {"status": status, "severity": severity, "source": source, "project_id": project_id}
    with governed_call(monitor, principal, "list_incidents", {**filters, "limit": limit, "offset": offset}) as call:
        query = _where_equal(select(Incident), Incident, filters).order_by(
            col(Incident.last_seen_at).desc(), col(Incident.incident_id).desc()
        )
        rows, next_offset = _page(call.session, query, limit, offset, monitor.config.limits.max_page_size)
        return IncidentPage(
            incidents=[IncidentSummary.model_validate(r, from_attributes=True) for r in rows],
            next_offset=next_offset,
        )


def get_incident(monitor: Monitor, principal: Principal, incident_id: str) -> IncidentDetail:
    with governed_call(
        monitor, principal, "get_incident", {"incident_id": incident_id}, subject_id=incident_id
    ) as call:
        incident = get_incident_row(call.session, incident_id)
        drafts = call.session.exec(
            select(Draft).where(Draft.incident_id == incident_id).order_by(col(Draft.created_at).desc())
        ).all()
        occurrences = call.session.exec(
            select(IncidentOccurrence)
            .where(IncidentOccurrence.incident_id == incident_id)
            .order_by(col(IncidentOccurrence.seen_at).desc())
            .limit(20)
        ).all()
        return IncidentDetail(
            incident=IncidentBase.model_validate(incident, from_attributes=True),
            drafts=[draft_summary(d) for d in drafts],
            recent_occurrences=[OccurrenceView.model_validate(o, from_attributes=True) for o in occurrences],
            timeline_run_id=incident.last_run_id,
            timeline=run_timeline(call.session, incident.last_run_id),
        )


def list_drafts(
    monitor: Monitor,
    principal: Principal,
    *,
    status: DraftStatus | None = None,
    severity: Severity | None = None,
    source: str | None = None,
    incident_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> DraftPage:
    filters: dict[str, Any] = {"status": status, "severity": severity, "source": source, "incident_id": incident_id}
    with governed_call(monitor, principal, "list_drafts", {**filters, "limit": limit, "offset": offset}) as call:
        query = _where_equal(select(Draft), Draft, filters).order_by(
            col(Draft.updated_at).desc(), col(Draft.draft_id).desc()
        )
        rows, next_offset = _page(call.session, query, limit, offset, monitor.config.limits.max_page_size)
        return DraftPage(drafts=[draft_summary(d) for d in rows], next_offset=next_offset)


def get_draft(monitor: Monitor, principal: Principal, draft_id: str) -> DraftDetail:
    with governed_call(monitor, principal, "get_draft", {"draft_id": draft_id}, subject_id=draft_id) as call:
        draft = get_draft_row(call.session, draft_id)
        triage = call.session.exec(
            select(TriageRun).where(TriageRun.draft_id == draft_id).order_by(col(TriageRun.created_at).desc()).limit(1)
        ).first()
        approvals = call.session.exec(
            select(ApprovalRequest)
            .where(ApprovalRequest.draft_id == draft_id)
            .order_by(col(ApprovalRequest.requested_at).desc())
        ).all()
        return DraftDetail(
            draft=DraftBase.model_validate(draft, from_attributes=True),
            latest_triage=TriageSummary.model_validate(triage, from_attributes=True) if triage else None,
            approvals=[ApprovalSummary.model_validate(a, from_attributes=True) for a in approvals],
            next_step=draft_next_step(draft, triaged=triage is not None),
        )


def list_receipts(
    monitor: Monitor,
    principal: Principal,
    *,
    draft_id: str | None = None,
    incident_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> ReceiptPage:
    filters: dict[str, Any] = {"draft_id": draft_id, "incident_id": incident_id}
    with governed_call(monitor, principal, "list_receipts", {**filters, "limit": limit, "offset": offset}) as call:
        query = _where_equal(select(Receipt), Receipt, filters).order_by(
            col(Receipt.created_at).desc(), col(Receipt.receipt_id).desc()
        )
        rows, next_offset = _page(call.session, query, limit, offset, monitor.config.limits.max_page_size)
        return ReceiptPage(
            receipts=[ReceiptSummary.model_validate(r, from_attributes=True) for r in rows],
            next_offset=next_offset,
        )


def list_approvals(
    monitor: Monitor,
    principal: Principal,
    *,
    status: ApprovalStatus | None = ApprovalStatus.pending,
    limit: int = 50,
    offset: int = 0,
) -> ApprovalPage:
    filters: dict[str, Any] = {"status": status}
    with governed_call(monitor, principal, "list_approvals", {**filters, "limit": limit, "offset": offset}) as call:
        query = _where_equal(select(ApprovalRequest), ApprovalRequest, filters).order_by(
            col(ApprovalRequest.requested_at).desc()
        )
        rows, next_offset = _page(call.session, query, limit, offset, monitor.config.limits.max_page_size)
        return ApprovalPage(
            approvals=[ApprovalRequestBase.model_validate(a, from_attributes=True) for a in rows],
            next_offset=next_offset,
        )
