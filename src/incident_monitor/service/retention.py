"""Retention: the ``[retention]`` policy applied (``incident-monitor retention apply``).

Resolved incidents whose last report is older than ``incidents_days`` are deleted with everything
that hangs off them (occurrences, drafts, triage runs, approvals, receipts); open ones are kept,
however old. Audit rows older than ``audit_days`` are never dropped silently: they are written to
an archive file (the export format, so ``audit verify --file`` checks it offline), an archive
checkpoint binding the last archived row is signed, and only then are they deleted; the chain in
the database then starts from that signed anchor. Export first (``incident-monitor export``) when
evidence must outlive the policy.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from incident_monitor.domain.enums import IncidentStatus
from incident_monitor.domain.models import (
    ApprovalRequest,
    AuditEvent,
    Draft,
    Incident,
    IncidentOccurrence,
    Receipt,
    TriageRun,
)
from incident_monitor.errors import InvalidInput
from incident_monitor.policy.principal import Principal
from incident_monitor.service.audit_checkpoints import checkpoint_file_path, write_checkpoint
from incident_monitor.service.evidence_export import write_audit_archive
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor


class RetentionResult(BaseModel):
    incidents_deleted: int = 0
    audit_rows_archived: int = 0
    archive_file: str | None = None
    archived_through_seq: int | None = None


def archive_dir(monitor: Monitor) -> Path:
    policy = monitor.config.retention
    if policy is not None and policy.archive_dir is not None:
        return policy.archive_dir.expanduser()
    return checkpoint_file_path(monitor).parent / "archive"


def _delete_incidents(session: Session, cutoff: datetime) -> int:
    ids = list(
        session.exec(
            select(Incident.incident_id).where(
                Incident.status == IncidentStatus.resolved, col(Incident.last_seen_at) < cutoff
            )
        ).all()
    )
    if not ids:
        return 0
    drafts = select(Draft.draft_id).where(col(Draft.incident_id).in_(ids))
    for child in (Receipt, ApprovalRequest, TriageRun):
        session.exec(delete(child).where(col(child.draft_id).in_(drafts)))
    for table, column in ((Draft, Draft.incident_id), (IncidentOccurrence, IncidentOccurrence.incident_id)):
        session.exec(delete(table).where(col(column).in_(ids)))
    session.exec(delete(Incident).where(col(Incident.incident_id).in_(ids)))
    return len(ids)


def _archive_audit(monitor: Monitor, cutoff: datetime) -> RetentionResult:
    with monitor.session() as session:
        first = session.exec(select(func.min(AuditEvent.seq))).one()
        through = session.exec(select(func.max(AuditEvent.seq)).where(col(AuditEvent.at) < cutoff)).one()
        if first is None or through is None:
            return RetentionResult()
        output = archive_dir(monitor) / f"audit-{first:012d}-{through:012d}.jsonl"
        counts = write_audit_archive(monitor, session, output, first_after=first - 1, through=through)
    # Signed before anything is deleted: a crash here leaves rows that verify from the anchor on.
    if write_checkpoint(monitor, archive_through=through) is None:
        output.unlink()
        raise InvalidInput("the audit chain does not verify: nothing archived (run `incident-monitor audit verify`)")
    with monitor.session() as session:
        session.exec(delete(AuditEvent).where(col(AuditEvent.seq) <= through))
    return RetentionResult(
        audit_rows_archived=counts.get("audit_event", 0), archive_file=str(output), archived_through_seq=through
    )


def apply_retention(monitor: Monitor, principal: Principal) -> RetentionResult:
    policy = monitor.config.retention
    if policy is None:
        raise InvalidInput("retention: no [retention] policy is configured; add one (see docs/security.md)")
    now = monitor.clock()
    result = RetentionResult()
    with governed_call(monitor, principal, "apply_retention", policy.model_dump(mode="json")) as call:
        if policy.incidents_days is not None:
            result.incidents_deleted = _delete_incidents(call.session, now - timedelta(days=policy.incidents_days))
        call.notes.append(f"{result.incidents_deleted} resolved incident(s) deleted with their drafts and receipts")
    # Audit rows after the call's own row is committed: the archive and its checkpoint cover it.
    if policy.audit_days is not None:
        archived = _archive_audit(monitor, now - timedelta(days=policy.audit_days))
        result = result.model_copy(update=archived.model_dump(exclude={"incidents_deleted"}))
    return result
