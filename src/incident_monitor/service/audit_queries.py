"""Governed operations on the audit log: recent events, the chain check (with its checkpoint), key rotation."""

from __future__ import annotations

from sqlmodel import col, select

from incident_monitor.domain.models import AuditEvent, AuditEventBase
from incident_monitor.errors import InvalidInput
from incident_monitor.policy.principal import Principal
from incident_monitor.service.audit_chain import AuditVerification
from incident_monitor.service.audit_checkpoints import (
    seal_before_first_checkpoint,
    verify_audit_log,
    write_checkpoint,
)
from incident_monitor.service.audit_keys import rotate_key_file
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor


def verify_audit(monitor: Monitor, principal: Principal, *, incremental: bool = False) -> AuditVerification:
    """Every row (or, incremental, the rows since the last signed checkpoint) against the key and checkpoints.

    A chain that verifies gets a fresh signed checkpoint of its head, so the rows just checked are
    pinned outside the database from now on.
    """
    seal_before_first_checkpoint(monitor)
    with governed_call(monitor, principal, "verify_audit", {"incremental": incremental}) as call:
        result = verify_audit_log(monitor, call.session, incremental=incremental)
    if result.ok:
        write_checkpoint(monitor)
    return result


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


def rotate_audit_key(monitor: Monitor, principal: Principal) -> str:
    """A fresh current key in the key file; returns its id. Older keys stay to verify older rows.

    The next row (this call's own) is preceded by a rotation record naming the new and the previous
    key, sealed with the new one; a checkpoint signed with the new key follows. Other processes keep
    their key until restarted (their rows still verify: the key ring holds both).
    """
    with governed_call(monitor, principal, "rotate_audit_key", {}) as call:
        previous = monitor.audit_keys.current.key_id
        monitor.audit_keys = rotate_key_file(monitor.audit_keys)
        call.notes.append(f"audit key rotated: new key {monitor.audit_keys.current.key_id}, previous key {previous}")
    write_checkpoint(monitor)
    return monitor.audit_keys.current.key_id
