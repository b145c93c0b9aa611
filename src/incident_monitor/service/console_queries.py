"""Read views the incident console needs beyond the tools' reads: a sorted, filtered incident list with
per-severity counts, an incident with everything about it, and the approvals queue oldest first.

Each is one governed read under an existing read action (scope check and audit row as for the tools).
Store-agnostic SQL only (SQLAlchemy expressions): the same queries serve SQLite and PostgreSQL.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from incident_monitor.domain.enums import ApprovalStatus, IncidentStatus, Severity
from incident_monitor.domain.io import OccurrenceView, TimelineEvent
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
    TriageRunBase,
)
from incident_monitor.errors import InvalidInput
from incident_monitor.policy.principal import Principal
from incident_monitor.policy.route_decision import RouteDecision
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.queries import (
    check_page,
    draft_next_step,
    get_incident_row,
    incident_drafts,
    latest_triage_and_approvals,
    recent_occurrences,
    run_timeline,
)
from incident_monitor.service.route_preview import decide_for_draft

# Worst first: the order the console lists severities in.
SEVERITY_ORDER = (Severity.critical, Severity.high, Severity.medium, Severity.low)
ACTIVE_STATUSES = (IncidentStatus.open, IncidentStatus.triaged, IncidentStatus.published)
MAX_TEXT_FILTER_CHARS = 200
# Actions whose audit rows change an incident, its drafts or approvals: the "status history".
HISTORY_ACTIONS = (
    "report_incident",
    "triage_draft",
    "request_approval",
    "decide_approval",
    "publish_draft",
    "resolve_incident",
)
MAX_HISTORY_EVENTS = 200


class StatusFilter(StrEnum):
    """``active`` (everything not resolved) is the default view; ``all`` includes resolved incidents."""

    active = "active"
    all = "all"
    open = "open"
    triaged = "triaged"
    published = "published"
    resolved = "resolved"


class IncidentSort(StrEnum):
    severity = "severity"  # worst first, then most recently seen
    recent = "recent"  # most recently seen first
    oldest = "oldest"  # least recently seen first
    occurrences = "occurrences"  # most occurrences first


class IncidentFilters(BaseModel):
    status: StatusFilter = StatusFilter.active
    severity: Severity | None = None
    project_id: str | None = None
    source: str | None = None
    reported_by: str | None = Field(default=None, description="The agent or principal that reported it.")
    text: str | None = Field(default=None, description="Text contained in the title (case-insensitive).")


class IncidentListView(BaseModel):
    incidents: list[IncidentBase]
    counts: dict[Severity, int] = Field(description="Incidents per severity under every filter except severity.")
    total: int = Field(description="Incidents matching every filter.")
    offset: int
    limit: int
    next_offset: int | None
    previous_offset: int | None


class DraftView(BaseModel):
    """A draft with everything an operator checks: evidence, latest triage, approvals, receipts."""

    draft: DraftBase
    latest_triage: TriageRunBase | None
    approvals: list[ApprovalRequestBase]
    receipts: list[ReceiptBase]
    next_step: str = Field(description="What the agent does next with this draft (as get_draft says).")


MAX_RECEIPTS_PER_DRAFT = 50


def _draft_view(session: Session, draft: Draft) -> DraftView:
    triage, approvals = latest_triage_and_approvals(session, draft.draft_id)
    receipts = session.exec(
        select(Receipt)
        .where(Receipt.draft_id == draft.draft_id)
        .order_by(col(Receipt.created_at).desc())
        .limit(MAX_RECEIPTS_PER_DRAFT)
    ).all()
    return DraftView(
        draft=DraftBase.model_validate(draft, from_attributes=True),
        latest_triage=TriageRunBase.model_validate(triage, from_attributes=True) if triage else None,
        approvals=[ApprovalRequestBase.model_validate(a, from_attributes=True) for a in approvals],
        receipts=[ReceiptBase.model_validate(r, from_attributes=True) for r in receipts],
        next_step=draft_next_step(draft, triaged=triage is not None),
    )


class IncidentView(BaseModel):
    incident: IncidentBase
    drafts: list[DraftView]
    occurrences: list[OccurrenceView]
    runs: list[str] = Field(description="Runs that reported this incident, most recent first.")
    timeline_run_id: str | None
    timeline: list[TimelineEvent]
    history: list[AuditEventBase]


class PendingApproval(BaseModel):
    approval: ApprovalRequestBase
    draft: DraftBase
    route: RouteDecision = Field(description="The route decision now: destination, and why approval is required.")


def _clean_text(name: str, value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > MAX_TEXT_FILTER_CHARS:
        raise InvalidInput(f"{name}: {len(value)} characters, limit {MAX_TEXT_FILTER_CHARS}; shorten it")
    return value


def _filtered(
    query: SelectOfScalar[Any], filters: IncidentFilters, *, with_severity: bool, time_ordered: bool = False
) -> SelectOfScalar[Any]:
    """``time_ordered``: the query is ordered by last seen without a severity, so "active" is written as
    ``status != resolved`` (the same rows): an IN over statuses leads planners to the status index and a
    sort of every active row, where walking the last-seen index stops after one page."""
    if filters.status is StatusFilter.active and time_ordered:
        query = query.where(Incident.status != IncidentStatus.resolved)
    elif filters.status is StatusFilter.active:
        query = query.where(col(Incident.status).in_(ACTIVE_STATUSES))
    elif filters.status is not StatusFilter.all:
        query = query.where(Incident.status == IncidentStatus(filters.status.value))
    if with_severity and filters.severity is not None:
        query = query.where(Incident.severity == filters.severity)
    for name, column in (("project_id", Incident.project_id), ("source", Incident.source)):
        value = _clean_text(name, getattr(filters, name))
        if value is not None:
            query = query.where(column == value)
    reporter = _clean_text("reported_by", filters.reported_by)
    if reporter is not None:
        query = query.where(Incident.reported_by == reporter)
    text = _clean_text("text", filters.text)
    if text is not None:
        # LIKE with the user's % and _ escaped; lower() on both sides works on every store.
        query = query.where(col(Incident.title).icontains(text, autoescape=True))
    return query


def _count(session: Session, filters: IncidentFilters, severity: Severity) -> int:
    query = _filtered(select(func.count()), filters, with_severity=False).where(Incident.severity == severity)
    return int(session.exec(query).one())


_NEWEST_FIRST = (col(Incident.last_seen_at).desc(), col(Incident.incident_id).desc())


def _severity_page(
    session: Session, filters: IncidentFilters, counts: dict[Severity, int], limit: int, offset: int
) -> list[Incident]:
    """Worst first, newest first within a severity: one indexed query per severity the page spans.

    Ordering by a CASE over severity would sort every matching row; walking the severities in order
    with the counts already known reads only the rows on the page.
    """
    rows: list[Incident] = []
    skip = offset
    for severity in SEVERITY_ORDER:
        available = counts.get(severity, 0)
        if skip >= available:
            skip -= available
            continue
        query = _filtered(select(Incident), filters, with_severity=False).where(Incident.severity == severity)
        rows.extend(session.exec(query.order_by(*_NEWEST_FIRST).offset(skip).limit(limit - len(rows))).all())
        skip = 0
        if len(rows) >= limit:
            break
    return rows


def _ordered(sort: IncidentSort) -> tuple[Any, ...]:
    if sort is IncidentSort.oldest:
        return (col(Incident.last_seen_at).asc(), col(Incident.incident_id).asc())
    if sort is IncidentSort.occurrences:
        return (col(Incident.occurrence_count).desc(), *_NEWEST_FIRST)
    return _NEWEST_FIRST


def list_incident_view(
    monitor: Monitor,
    principal: Principal,
    filters: IncidentFilters,
    *,
    sort: IncidentSort = IncidentSort.severity,
    limit: int = 50,
    offset: int = 0,
) -> IncidentListView:
    arguments = {**filters.model_dump(mode="json"), "sort": sort.value, "limit": limit, "offset": offset}
    with governed_call(monitor, principal, "list_incidents", arguments) as call:
        check_page(limit, offset, monitor.config.limits.max_page_size)
        session = call.session
        # One count per severity: each walks one index range; a GROUP BY over the same rows sorts them all.
        counts = {severity: _count(session, filters, severity) for severity in SEVERITY_ORDER}
        selected = {filters.severity: counts[filters.severity]} if filters.severity else counts
        total = sum(selected.values())
        if sort is IncidentSort.severity:
            rows = _severity_page(session, filters, selected, limit, offset)
        else:
            query = _filtered(select(Incident), filters, with_severity=True, time_ordered=True).order_by(
                *_ordered(sort)
            )
            rows = list(session.exec(query.offset(offset).limit(limit)).all())
        return IncidentListView(
            incidents=[IncidentBase.model_validate(r, from_attributes=True) for r in rows],
            counts=counts,
            total=total,
            offset=offset,
            limit=limit,
            next_offset=offset + limit if offset + limit < total else None,
            previous_offset=max(0, offset - limit) if offset > 0 else None,
        )


def get_incident_view(
    monitor: Monitor, principal: Principal, incident_id: str, *, run_id: str | None = None
) -> IncidentView:
    """One incident with its drafts, triage, approvals, receipts, history and a run's timeline.

    ``run_id`` picks which of the incident's runs the timeline shows (default: the last one to report it).
    """
    arguments = {"incident_id": incident_id, "run_id": run_id}
    with governed_call(monitor, principal, "get_incident", arguments, subject_id=incident_id) as call:
        session = call.session
        incident = get_incident_row(session, incident_id)
        draft_views = [_draft_view(session, d) for d in incident_drafts(session, incident_id)]
        occurrences = recent_occurrences(session, incident_id)
        runs = list(dict.fromkeys(r for r in [incident.last_run_id, *(o.run_id for o in occurrences)] if r))
        if run_id is not None and run_id not in runs:
            known = session.exec(
                select(IncidentOccurrence.occurrence_id)
                .where(IncidentOccurrence.incident_id == incident_id, IncidentOccurrence.run_id == run_id)
                .limit(1)
            ).first()
            if known is None:
                raise InvalidInput(f"run_id: run {run_id!r} did not report incident {incident_id}; pick one listed")
            runs.append(run_id)
        timeline_run = run_id or incident.last_run_id
        subjects = [
            incident_id,
            *(v.draft.draft_id for v in draft_views),
            *(a.approval_id for v in draft_views for a in v.approvals),
        ]
        history = session.exec(
            select(AuditEvent)
            .where(col(AuditEvent.subject_id).in_(subjects), col(AuditEvent.action).in_(HISTORY_ACTIONS))
            .order_by(col(AuditEvent.seq).asc())
            .limit(MAX_HISTORY_EVENTS)
        ).all()
        return IncidentView(
            incident=IncidentBase.model_validate(incident, from_attributes=True),
            drafts=draft_views,
            occurrences=occurrences,
            runs=runs,
            timeline_run_id=timeline_run,
            timeline=run_timeline(session, timeline_run),
            history=[AuditEventBase.model_validate(e, from_attributes=True) for e in history],
        )


def list_pending_approvals(monitor: Monitor, principal: Principal, *, limit: int = 50) -> list[PendingApproval]:
    """Pending approval requests, oldest first, each with the draft it would publish and its route now."""
    arguments = {"status": ApprovalStatus.pending.value, "order": "oldest_first", "limit": limit}
    with governed_call(monitor, principal, "list_approvals", arguments) as call:
        check_page(limit, 0, monitor.config.limits.max_page_size)
        rows = call.session.exec(
            select(ApprovalRequest, Draft)
            .join(Draft, col(Draft.draft_id) == col(ApprovalRequest.draft_id))
            .where(ApprovalRequest.status == ApprovalStatus.pending)
            .order_by(col(ApprovalRequest.requested_at).asc(), col(ApprovalRequest.approval_id).asc())
            .limit(limit)
        ).all()
        return [
            PendingApproval(
                approval=ApprovalRequestBase.model_validate(approval, from_attributes=True),
                draft=DraftBase.model_validate(draft, from_attributes=True),
                route=decide_for_draft(monitor, draft),
            )
            for approval, draft in rows
        ]
