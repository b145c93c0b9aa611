"""Governed reads of the audit log: recent events and the chain check."""

from __future__ import annotations

from sqlmodel import col, select

from incident_monitor.domain.models import AuditEvent, AuditEventBase
from incident_monitor.errors import InvalidInput
from incident_monitor.policy.principal import Principal
from incident_monitor.service.audit_chain import AuditVerification, verify_chain
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor


def verify_audit(monitor: Monitor, principal: Principal) -> AuditVerification:
    with governed_call(monitor, principal, "verify_audit", {}) as call:
        return verify_chain(call.session)


def list_audit_events(
    monitor: Monitor, principal: Principal, *, limit: int = 50, subject_id: str | None = None
) -> list[AuditEventBase]:
    """The newest events, oldest first (reads like a log)."""
    if not 1 <= limit <= 10_000:
        raise InvalidInput("limit: use 1 to 10000")
    with governed_call(monitor, principal, "read_audit", {"limit": limit, "subject_id": subject_id}) as call:
        query = select(AuditEvent)
        if subject_id:
            query = query.where(AuditEvent.subject_id == subject_id)
        rows = call.session.exec(query.order_by(col(AuditEvent.seq).desc()).limit(limit)).all()
        return [AuditEventBase.model_validate(r, from_attributes=True) for r in reversed(rows)]
