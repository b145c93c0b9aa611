"""The append-only, hash-chained audit log.

Each row's hash covers its fields and the previous row's hash, so editing or deleting any row
breaks every hash after it; ``verify_chain`` finds the first break.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import insert
from sqlmodel import Session, col, select

from incident_monitor.domain.enums import Decision
from incident_monitor.domain.evidence import sha256_hex
from incident_monitor.domain.models import AuditEvent, AuditEventBase, table_of

GENESIS_HASH = "0" * 64

_TABLE = table_of(AuditEvent)
_COLUMNS = tuple(column.name for column in _TABLE.columns)
_HEAD = select(_TABLE.c.seq, _TABLE.c.hash).order_by(_TABLE.c.seq.desc()).limit(1)
_INSERT = insert(_TABLE)


def arguments_digest(arguments: Any) -> str:
    return "sha256:" + sha256_hex(arguments)


def _row_hash(event: AuditEventBase, prev_hash: str) -> str:
    fields = {
        "seq": event.seq,
        "at": event.at.isoformat(),
        "principal": event.principal,
        "action": event.action,
        "decision": event.decision.value,
        "reasons": event.reasons,
        "arguments_digest": event.arguments_digest,
        "subject_id": event.subject_id,
        "run_id": event.run_id,
        "prev_hash": prev_hash,
    }
    return sha256_hex(fields)


def append_audit(
    session: Session,
    *,
    at: datetime,
    principal: str,
    action: str,
    decision: Decision,
    reasons: Iterable[str],
    arguments: Any,
    subject_id: str | None = None,
    run_id: str | None = None,
) -> AuditEventBase:
    """Append one event inside the caller's transaction (committed with the effect it records).

    One indexed read of the chain's head and one insert: every unit of work begins IMMEDIATE (the
    write lock is ours), so the head cannot move until we commit and ``seq`` is the head's plus one.
    Core statements, not the ORM: this runs on every governed call, and the ORM's unit of work
    cost more than the rest of a report together.
    """
    connection = session.connection()
    head = connection.execute(_HEAD).first()
    prev_hash = head.hash if head is not None else GENESIS_HASH
    event = AuditEventBase.model_construct(
        seq=(head.seq if head is not None else 0) + 1,
        at=at,
        principal=principal,
        action=action,
        decision=decision,
        reasons=list(reasons),
        arguments_digest=arguments_digest(arguments),
        subject_id=subject_id,
        run_id=run_id,
        prev_hash=prev_hash,
        hash="",
    )
    event.hash = _row_hash(event, prev_hash)
    connection.execute(_INSERT, {name: getattr(event, name) for name in _COLUMNS})
    return event


class AuditVerification(BaseModel):
    ok: bool
    events_checked: int
    first_broken_seq: int | None = None
    problem: str | None = None
    head_hash: str | None = None


def verify_chain(session: Session, *, batch: int = 5_000) -> AuditVerification:
    prev_hash = GENESIS_HASH
    checked = 0
    last_seq = 0
    while True:
        rows = session.exec(
            select(AuditEvent).where(col(AuditEvent.seq) > last_seq).order_by(col(AuditEvent.seq)).limit(batch)
        ).all()
        if not rows:
            break
        for event in rows:
            assert event.seq is not None
            if event.prev_hash != prev_hash:
                return AuditVerification(
                    ok=False,
                    events_checked=checked,
                    first_broken_seq=event.seq,
                    problem="prev_hash does not match the previous event (an event was removed or reordered)",
                )
            if event.hash != _row_hash(event, prev_hash):
                return AuditVerification(
                    ok=False,
                    events_checked=checked,
                    first_broken_seq=event.seq,
                    problem="hash does not match the event's contents (the event was modified)",
                )
            prev_hash = event.hash
            last_seq = event.seq
            checked += 1
    return AuditVerification(ok=True, events_checked=checked, head_hash=prev_hash if checked else None)
