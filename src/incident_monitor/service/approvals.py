"""Approvals: an agent asks, a different principal with the approve scope decides.

An approval binds to the draft's evidence digest, destination, route and policy version, expires,
and is used once (by the publish it authorised).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import update
from sqlmodel import Session, col, select

from incident_monitor.domain.enums import ApprovalStatus, DraftStatus
from incident_monitor.domain.ids import check_id
from incident_monitor.domain.io import ApprovalResult, ApprovalSummary
from incident_monitor.domain.models import ApprovalRequest, Draft, new_id
from incident_monitor.domain.transitions import check_draft_transition
from incident_monitor.errors import (
    InvalidInput,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    PublishBlocked,
)
from incident_monitor.policy.principal import Principal
from incident_monitor.policy.redaction import redact_text
from incident_monitor.policy.route_decision import RouteDecision
from incident_monitor.service import self_monitoring
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.queries import draft_next_step, get_draft_row, run_id_for_draft
from incident_monitor.service.route_preview import decide_for_draft

MAX_NOTE_CHARS = 2_000


def clean_note(field: str, value: str, *, limit: int = MAX_NOTE_CHARS, say: str = "why in a sentence") -> str:
    """A reason or note as it may be stored, returned, audited and delivered: trimmed, bounded, redacted."""
    text = value.strip()
    if not text:
        raise InvalidInput(f"{field}: required; say {say}")
    if len(text) > limit:
        raise InvalidInput(f"{field}: {len(text)} characters, limit {limit}; shorten it")
    return redact_text(text)


def is_expired(approval: ApprovalRequest, now: datetime) -> bool:
    return approval.expires_at <= now


def approvals_for(session: Session, draft_id: str, *statuses: ApprovalStatus) -> list[ApprovalRequest]:
    return list(
        session.exec(
            select(ApprovalRequest)
            .where(ApprovalRequest.draft_id == draft_id, col(ApprovalRequest.status).in_(statuses))
            .order_by(col(ApprovalRequest.requested_at).desc())
        ).all()
    )


def _result(approval: ApprovalRequest, draft: Draft, route: RouteDecision | None = None) -> ApprovalResult:
    return ApprovalResult(
        approval=ApprovalSummary.model_validate(approval, from_attributes=True),
        draft_status=draft.status,
        # Asking for approval comes after triage in the flow: what follows is the route's answer.
        next_step=draft_next_step(draft, triaged=True, route=route),
    )


def request_approval(monitor: Monitor, principal: Principal, draft_id: str, reason: str) -> ApprovalResult:
    arguments = {"draft_id": draft_id, "reason": reason}
    with governed_call(monitor, principal, "request_approval", arguments, subject_id=draft_id) as call:
        session = call.session
        reason = clean_note("reason", reason)
        draft = get_draft_row(session, draft_id)
        call.run_id = run_id_for_draft(session, draft)
        now = monitor.clock()
        decision = decide_for_draft(monitor, draft)
        binding = (draft.evidence_digest, decision.destination_id, decision.route_id, decision.policy_version)
        # Asking twice returns the request already open, so a retrying agent makes no duplicates;
        # one bound to other evidence, another route or an older policy, or expired, is superseded.
        for existing in approvals_for(session, draft_id, ApprovalStatus.pending, ApprovalStatus.approved):
            existing_binding = (
                existing.evidence_digest,
                existing.destination_id,
                existing.route_id,
                existing.policy_version,
            )
            if existing_binding == binding and not is_expired(existing, now):
                call.notes.append(f"existing {existing.status.value} approval {existing.approval_id} returned")
                return _result(existing, draft, decision)
            existing.status = ApprovalStatus.superseded
            session.add(existing)
        if draft.status in (DraftStatus.approval_required, DraftStatus.approved):
            # Its request or approval no longer applies (superseded above): start over.
            draft.status = DraftStatus.draft
        if decision.blocked:
            raise PublishBlocked(
                "route blocked, nothing to approve: "
                + "; ".join(decision.blocked_reasons)
                + ". Fix the route or destination (see preview_route) first.",
                reasons=decision.blocked_reasons,
            )
        check_draft_transition(draft.draft_id, draft.status, DraftStatus.approval_required)
        assert decision.destination_id is not None
        approval = ApprovalRequest(
            approval_id=new_id("apr"),
            draft_id=draft.draft_id,
            incident_id=draft.incident_id,
            reason=reason,
            requested_by=principal.name,
            requested_at=now,
            evidence_digest=draft.evidence_digest,
            destination_id=decision.destination_id,
            route_id=decision.route_id,
            policy_version=decision.policy_version,
            expires_at=now + timedelta(minutes=monitor.config.approval.ttl_minutes),
        )
        draft.status = DraftStatus.approval_required
        draft.updated_at = now
        session.add(approval)
        session.add(draft)
        if not decision.approval_required:
            call.notes.append("approval requested although the route does not require it")
        call.notes.append(f"approval {approval.approval_id} pending for {decision.destination_id}")
        session.flush()
        return _result(approval, draft, decision)


def _decide_once(
    session: Session,
    approval: ApprovalRequest,
    decision: Literal["approve", "deny"],
    decided_by: str,
    note: str,
    now: datetime,
    expires_at: datetime | None,
) -> None:
    """Record the decision by a conditional update: of two operators deciding at once, one wins.

    Never read-then-write: the update only applies while the approval is still pending, so the other
    decision (another replica, another CLI) finds nothing to update and is told it is already decided.
    """
    values: dict[str, object] = {
        "status": ApprovalStatus.approved if decision == "approve" else ApprovalStatus.denied,
        "decided_by": decided_by,
        "decided_at": now,
        "decision_note": note,
    }
    if expires_at is not None:
        values["expires_at"] = expires_at
    decided = session.exec(
        update(ApprovalRequest)
        .where(col(ApprovalRequest.approval_id) == approval.approval_id)
        .where(col(ApprovalRequest.status) == ApprovalStatus.pending)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.refresh(approval)
    if decided.rowcount != 1:
        raise InvalidTransition(
            f"approval {approval.approval_id} was already decided ({approval.status.value}"
            f"{' by ' + approval.decided_by if approval.decided_by else ''}); nothing to decide"
        )


def decide_approval(
    monitor: Monitor,
    principal: Principal,
    approval_id: str,
    decision: Literal["approve", "deny"],
    note: str,
) -> ApprovalResult:
    arguments = {"approval_id": approval_id, "decision": decision, "note": note}
    with governed_call(monitor, principal, "decide_approval", arguments, subject_id=approval_id) as call:
        session = call.session
        if decision not in ("approve", "deny"):
            raise InvalidInput("decision: not allowed; use approve or deny")
        note = clean_note("note", note)
        approval = session.get(ApprovalRequest, check_id("approval_id", approval_id))
        if approval is None:
            raise NotFound(f"approval_id: no approval {approval_id}; run `incident-monitor approvals list`")
        if approval.requested_by == principal.name:
            raise PermissionDenied(
                f"self-approval refused: {principal.name} requested approval {approval_id}; "
                "a different principal with incident_monitor:approve must decide"
            )
        if approval.status is not ApprovalStatus.pending:
            raise InvalidTransition(
                f"approval {approval_id} is {approval.status.value}, not pending; nothing to decide"
            )
        now = monitor.clock()
        draft = get_draft_row(session, approval.draft_id)
        call.run_id = run_id_for_draft(session, draft)
        if is_expired(approval, now):
            raise InvalidTransition(
                f"approval {approval_id} expired at {approval.expires_at.isoformat()}; the agent must request again"
            )
        if draft.evidence_digest != approval.evidence_digest or draft.status is not DraftStatus.approval_required:
            approval.status = ApprovalStatus.superseded
            session.add(approval)
            call.notes.append("superseded: draft evidence changed since the request")
            session.flush()
            return _result(approval, draft)
        if approval.policy_version != monitor.config.policy_version:
            raise InvalidTransition(
                f"approval {approval_id} was requested under policy {approval.policy_version}; the policy is now "
                f"{monitor.config.policy_version}. The agent must request approval again."
            )
        target = DraftStatus.approved if decision == "approve" else DraftStatus.denied
        check_draft_transition(draft.draft_id, draft.status, target)
        # The approval's lifetime starts when it is granted.
        expires_at = now + timedelta(minutes=monitor.config.approval.ttl_minutes) if decision == "approve" else None
        _decide_once(session, approval, decision, principal.name, note, now, expires_at)
        draft.status = target
        draft.updated_at = now
        session.add(approval)
        session.add(draft)
        call.subject_id = approval_id
        call.notes.append(f"{decision}d draft {draft.draft_id}")
        session.flush()
        result = _result(approval, draft)
    if result.approval.status is ApprovalStatus.denied:
        self_monitoring.on_approval_denied(
            monitor, principal, approval_id, result.approval.requested_by, result.approval.decision_note or ""
        )
    return result
