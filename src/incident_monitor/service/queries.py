"""Read-only views: incidents, drafts, receipts, approvals. Filters and offset paging."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from incident_monitor.domain.enums import ApprovalStatus, DraftStatus, IncidentStatus, Severity
from incident_monitor.domain.ids import check_id
from incident_monitor.domain.io import (
    ApprovalPage,
    DraftDetail,
    DraftPage,
    DraftSummary,
    IncidentDetail,
    IncidentPage,
    OccurrenceView,
    ReceiptPage,
)
from incident_monitor.domain.models import (
    ApprovalRequest,
    ApprovalRequestBase,
    AuditEvent,
    AuditEventBase,
    Draft,
    DraftBase,
    Incident,
    IncidentBase,
    IncidentOccurrence,
    Receipt,
    ReceiptBase,
    TriageRun,
    TriageRunBase,
)
from incident_monitor.errors import InvalidInput, NotFound
from incident_monitor.policy.principal import Principal
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor

T = TypeVar("T")

# SQLite integers are 64-bit: a larger offset would overflow in the driver, not answer "no rows".
MAX_OFFSET = 2**31 - 1


def _page(
    session: Session, query: SelectOfScalar[T], limit: int, offset: int, max_limit: int
) -> tuple[list[T], int | None]:
    if not 1 <= limit <= max_limit:
        raise InvalidInput(f"limit: {limit} is out of range; use 1 to {max_limit} (limits.max_page_size)")
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidInput(f"offset: out of range; use 0 to {MAX_OFFSET}, or pass the next_offset of the previous page")
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
    incident = session.get(Incident, check_id("incident_id", incident_id))
    if incident is None:
        raise NotFound(f"incident_id: no incident {incident_id}; call list_incidents to find one")
    return incident


def get_draft_row(session: Session, draft_id: str) -> Draft:
    draft = session.get(Draft, check_id("draft_id", draft_id))
    if draft is None:
        raise NotFound(f"draft_id: no draft {draft_id}; call list_drafts to find one")
    return draft


def _check_id_filters(filters: dict[str, Any]) -> None:
    for name in ("incident_id", "draft_id"):
        if filters.get(name) is not None:
            check_id(name, filters[name])


def run_id_for_draft(session: Session, draft: Draft) -> str | None:
    """The run that last reported the draft's incident: its later decisions join that run's timeline."""
    incident = session.get(Incident, draft.incident_id)
    return incident.last_run_id if incident is not None else None


MAX_TIMELINE_EVENTS = 500


def run_timeline(session: Session, run_id: str | None) -> list[AuditEventBase]:
    """The audit events of one run, oldest first (the latest MAX_TIMELINE_EVENTS of a very long run)."""
    if not run_id:
        return []
    rows = session.exec(
        select(AuditEvent)
        .where(AuditEvent.run_id == run_id)
        .order_by(col(AuditEvent.seq).desc())
        .limit(MAX_TIMELINE_EVENTS)
    ).all()
    return [AuditEventBase.model_validate(r, from_attributes=True) for r in reversed(rows)]


def draft_summary(draft: Draft) -> DraftSummary:
    return DraftSummary.model_validate(draft, from_attributes=True)


def draft_next_step(draft: Draft) -> str:
    steps = {
        DraftStatus.draft: f"call preview_route with draft_id={draft.draft_id}, then triage_draft, then "
        "request_approval or publish_draft",
        DraftStatus.approval_required: "wait for an operator to approve or deny the pending approval",
        DraftStatus.approved: f"call publish_draft with draft_id={draft.draft_id}",
        DraftStatus.denied: "approval denied: keep the draft and its evidence; do not publish through another surface",
        DraftStatus.publishing: "a publish is in progress; read list_receipts",
        DraftStatus.published: f"published: read the receipt with list_receipts draft_id={draft.draft_id}",
        DraftStatus.publish_failed: f"publish failed: read the receipt error, then call publish_draft with "
        f"draft_id={draft.draft_id} to retry",
    }
    return steps[draft.status]


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
            incidents=[IncidentBase.model_validate(r, from_attributes=True) for r in rows],
            next_offset=next_offset,
        )


def _receipts_for(
    session: Session, *, incident_id: str | None = None, draft_id: str | None = None
) -> list[ReceiptBase]:
    query = _where_equal(select(Receipt), Receipt, {"incident_id": incident_id, "draft_id": draft_id})
    rows = session.exec(query.order_by(col(Receipt.created_at).desc()).limit(50)).all()
    return [ReceiptBase.model_validate(r, from_attributes=True) for r in rows]


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
            receipts=_receipts_for(call.session, incident_id=incident_id),
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
        _check_id_filters(filters)
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
            latest_triage=TriageRunBase.model_validate(triage, from_attributes=True) if triage else None,
            approvals=[ApprovalRequestBase.model_validate(a, from_attributes=True) for a in approvals],
            receipts=_receipts_for(call.session, draft_id=draft_id),
            next_step=draft_next_step(draft),
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
        _check_id_filters(filters)
        query = _where_equal(select(Receipt), Receipt, filters).order_by(
            col(Receipt.created_at).desc(), col(Receipt.receipt_id).desc()
        )
        rows, next_offset = _page(call.session, query, limit, offset, monitor.config.limits.max_page_size)
        return ReceiptPage(
            receipts=[ReceiptBase.model_validate(r, from_attributes=True) for r in rows],
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
