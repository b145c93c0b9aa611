"""Triage: a persisted, deterministic look at a draft — duplicates, similar incidents, rate, severity.

Its stable conclusions become part of the draft's evidence (so they are published and digested);
volatile figures (counts, rates, run ids) stay on the triage run only.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, func, select

from incident_monitor.config import TriageSettings
from incident_monitor.domain.enums import ApprovalStatus, DraftStatus, IncidentStatus, Severity
from incident_monitor.domain.evidence import (
    build_evidence,
    draft_route_tags,
    draft_severity,
    evidence_digest,
    render_body,
)
from incident_monitor.domain.io import TriageResult, TriageView
from incident_monitor.domain.models import (
    ApprovalRequest,
    Incident,
    IncidentOccurrence,
    TriageRun,
    new_id,
)
from incident_monitor.domain.transitions import check_draft_transition, check_incident_transition
from incident_monitor.errors import InvalidInput
from incident_monitor.policy.principal import Principal
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.queries import draft_next_step, get_draft_row, get_incident_row, run_id_for_draft
from incident_monitor.service.route_preview import decide_for_draft

_TOKEN = re.compile(r"[a-z][a-z0-9_-]+")
_VOLATILE = re.compile(r"\b[0-9a-f]{7,64}\b|\d+")
_STEP_UP = {Severity.low: Severity.medium, Severity.medium: Severity.high}
FROZEN_STATUSES = frozenset({DraftStatus.publishing, DraftStatus.published})


def title_tokens(title: str) -> frozenset[str]:
    return frozenset(_TOKEN.findall(_VOLATILE.sub(" ", title.lower())))


def similarity(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    return round(len(a & b) / len(a | b), 3)


def _compare(
    incident: Incident, candidates: list[Incident], settings: TriageSettings
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    mine = title_tokens(incident.title)
    duplicates: list[dict[str, Any]] = []
    similar: list[dict[str, Any]] = []
    for other in candidates:
        score = similarity(mine, title_tokens(other.title))
        same_event = other.event == incident.event and other.source == incident.source
        match = {
            "incident_id": other.incident_id,
            "title": other.title,
            "status": other.status.value,
            "similarity": score,
            "same_event": same_event,
        }
        if score >= settings.duplicate_threshold and same_event:
            duplicates.append(match)
        elif score >= settings.similarity_threshold:
            similar.append(match)
    key = lambda m: (-m["similarity"], m["incident_id"])  # noqa: E731 - deterministic order
    return sorted(duplicates, key=key)[:10], sorted(similar, key=key)[:10]


def _occurrences_in_window(session: Session, incident_id: str, since: datetime) -> int:
    return session.exec(
        select(func.count())
        .select_from(IncidentOccurrence)
        .where(IncidentOccurrence.incident_id == incident_id, col(IncidentOccurrence.seen_at) >= since)
    ).one()


def triage_draft(monitor: Monitor, principal: Principal, draft_id: str) -> TriageResult:
    with governed_call(monitor, principal, "triage_draft", {"draft_id": draft_id}, subject_id=draft_id) as call:
        session = call.session
        settings = monitor.config.triage
        draft = get_draft_row(session, draft_id)
        call.run_id = run_id_for_draft(session, draft)
        if "code_change" in draft.evidence:  # its evidence is the brief, not the incident: nothing to re-derive
            raise InvalidInput(
                f"draft_id: {draft_id} is a code-change draft; it is not triaged: call request_approval with it"
            )
        incident = get_incident_row(session, draft.incident_id)
        now = monitor.clock()

        candidates = list(
            session.exec(
                select(Incident)
                .where(Incident.incident_id != incident.incident_id)
                .order_by(col(Incident.last_seen_at).desc())
                .limit(settings.max_candidates)
            ).all()
        )
        duplicates, similar = _compare(incident, candidates, settings)
        window = timedelta(hours=settings.rate_window_hours)
        recent = _occurrences_in_window(session, incident.incident_id, now - window)
        per_hour = round(recent / settings.rate_window_hours, 3)

        findings: list[str] = []
        suggested = incident.severity
        if incident.recurrence_count:
            findings.append(f"recurrence: reopened {incident.recurrence_count} time(s) after being resolved")
            suggested = Severity.highest(suggested, Severity.high)
        if recent >= 10:
            suggested = _STEP_UP.get(suggested, suggested)
        for d in duplicates:
            findings.append(f"possible duplicate of {d['incident_id']} (title similarity {d['similarity']})")
        for s in similar:
            findings.append(f"similar to {s['incident_id']} (title similarity {s['similarity']})")
        suggested_tags = sorted(set(incident.route_tags) | ({"recurring"} if incident.recurrence_count else set()))
        summary = (
            f"{len(duplicates)} possible duplicate(s), {len(similar)} similar incident(s); "
            f"suggested severity {suggested.value}"
        )
        run_summary = f"{summary}; {recent} occurrence(s) in the last {settings.rate_window_hours}h"

        evidence_triage = {
            "suggested_severity": suggested.value,
            "suggested_route_tags": suggested_tags,
            "duplicate_of": [d["incident_id"] for d in duplicates],
            "similar_to": [s["incident_id"] for s in similar],
            "findings": findings,
            "summary": summary,
        }
        evidence = build_evidence(incident, evidence_triage)
        digest = evidence_digest(evidence)
        changed = digest != draft.evidence_digest and draft.status not in FROZEN_STATUSES
        if changed:
            if draft.status is not DraftStatus.draft:
                check_draft_transition(draft.draft_id, draft.status, DraftStatus.draft)
                draft.status = DraftStatus.draft
            draft.evidence = evidence
            draft.evidence_digest = digest
            draft.body = render_body(evidence, digest)
            draft.severity = draft_severity(evidence)
            draft.route_tags = draft_route_tags(evidence)
            draft.revision += 1
            draft.updated_at = now
            session.add(draft)
            # Reviews of the old evidence no longer apply.
            for approval in session.exec(
                select(ApprovalRequest).where(
                    ApprovalRequest.draft_id == draft.draft_id,
                    col(ApprovalRequest.status).in_([ApprovalStatus.pending, ApprovalStatus.approved]),
                )
            ).all():
                approval.status = ApprovalStatus.superseded
                session.add(approval)
            call.notes.append(f"evidence changed: revision {draft.revision}, {digest}")
        if incident.status is IncidentStatus.open:
            check_incident_transition(incident.incident_id, incident.status, IncidentStatus.triaged)
            incident.status = IncidentStatus.triaged
            session.add(incident)

        run = TriageRun(
            triage_run_id=new_id("tri"),
            draft_id=draft.draft_id,
            incident_id=incident.incident_id,
            created_at=now,
            created_by=principal.name,
            suggested_severity=suggested,
            suggested_route_tags=suggested_tags,
            duplicate_matches=duplicates,
            similar_incidents=similar,
            occurrence_count=incident.occurrence_count,
            occurrences_per_hour=per_hour,
            findings=findings,
            evidence_summary=run_summary,
            evidence_digest=draft.evidence_digest,
        )
        session.add(run)
        session.flush()
        return TriageResult(
            draft_id=draft.draft_id,
            triage_run=TriageView.model_validate(run, from_attributes=True),
            draft_status=draft.status,
            evidence_digest=draft.evidence_digest,
            evidence_changed=changed,
            next_step=draft_next_step(draft, triaged=True, route=decide_for_draft(monitor, draft)),
        )
