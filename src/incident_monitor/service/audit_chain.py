"""The append-only, hash-chained audit log, each row sealed with a keyed MAC.

Each row's hash covers its fields and the previous row's hash, so editing or deleting any row
breaks every hash after it. Each row also carries an HMAC-SHA256 over its seq, hash and key id,
made with the audit key (service/audit_keys.py), which never enters the database: whoever can write
the database but not read the key cannot re-hash the chain after an edit. Deleting rows from the end
is caught by the signed checkpoints outside the database (service/audit_checkpoints.py), which
``verify_audit_log`` (service/audit_checkpoints.py) checks the rows against.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, overload

from pydantic import BaseModel
from sqlmodel import Session, col, select

from incident_monitor.domain.enums import Decision
from incident_monitor.domain.evidence import sha256_hex
from incident_monitor.domain.models import AuditEvent, AuditEventBase, table_of
from incident_monitor.service.audit_keys import AuditKey, AuditKeyring
from incident_monitor.store.group_commit import UnitOfWork
from incident_monitor.store.prepared import Prepared

GENESIS_HASH = "0" * 64
# The row the first append under a new current key writes before its own: the only place the key may change.
ROTATION_ACTION = "audit_key_rotated"
SYSTEM_PRINCIPAL = "incident-monitor:audit"

_TABLE = table_of(AuditEvent)
_COLUMNS = tuple(column.name for column in _TABLE.columns)
_HEAD_STATEMENT = select(_TABLE.c.seq, _TABLE.c.hash, _TABLE.c.key_id).order_by(_TABLE.c.seq.desc()).limit(1)
# Both run on every governed call: compiled once, on the driver's cursor (store/prepared.py).
_HEAD = Prepared(_HEAD_STATEMENT)
_INSERT = Prepared.insert(_TABLE)


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


def row_mac(key: AuditKey, seq: int, row_hash: str) -> str:
    return key.mac(f"incident-monitor audit row\n{seq}\n{row_hash}\n{key.key_id}".encode())


def _build(
    seq: int,
    prev_hash: str,
    key: AuditKey,
    *,
    at: datetime,
    principal: str,
    action: str,
    decision: Decision,
    reasons: list[str],
    digest: str,
    subject_id: str | None,
    run_id: str | None,
) -> AuditEventBase:
    event = AuditEventBase.model_construct(
        seq=seq,
        at=at,
        principal=principal,
        action=action,
        decision=decision,
        reasons=reasons,
        arguments_digest=digest,
        subject_id=subject_id,
        run_id=run_id,
        prev_hash=prev_hash,
        hash="",
        key_id=key.key_id,
        mac=None,
    )
    event.hash = _row_hash(event, prev_hash)
    event.mac = row_mac(key, seq, event.hash)
    return event


def append_audit(
    session: Session | UnitOfWork,
    keyring: AuditKeyring,
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
    head = _HEAD.first(connection)
    prev_hash = head.hash if head is not None else GENESIS_HASH
    seq = (head.seq if head is not None else 0) + 1
    key = keyring.current
    if head is not None and head.key_id is not None and head.key_id != key.key_id:
        # The first row under a new key says so, so a verifier accepts the change of key here and nowhere else.
        rotation = _build(
            seq,
            prev_hash,
            key,
            at=at,
            principal=SYSTEM_PRINCIPAL,
            action=ROTATION_ACTION,
            decision=Decision.allow,
            reasons=[f"new key {key.key_id}", f"previous key {head.key_id}"],
            digest=arguments_digest({}),
            subject_id=None,
            run_id=None,
        )
        _INSERT.execute(connection, {name: getattr(rotation, name) for name in _COLUMNS})
        prev_hash, seq = rotation.hash, seq + 1
    event = _build(
        seq,
        prev_hash,
        key,
        at=at,
        principal=_text(principal),
        action=_text(action),
        decision=decision,
        reasons=list(reasons),
        digest=arguments_digest(arguments),
        subject_id=_text(subject_id),
        run_id=_text(run_id),
    )
    _INSERT.execute(connection, {name: getattr(event, name) for name in _COLUMNS})
    return event


@overload
def _text(value: str) -> str: ...
@overload
def _text(value: None) -> None: ...
def _text(value: str | None) -> str | None:
    # Hashed as stored: PostgreSQL's text cannot hold U+0000 (store/engine.py), so neither does a row's text column.
    return value.replace("\x00", "\ufffd") if value is not None and "\x00" in value else value


class AuditVerification(BaseModel):
    ok: bool
    events_checked: int
    first_broken_seq: int | None = None
    problem: str | None = None
    head_hash: str | None = None
    head_seq: int | None = None
    # Incremental checks start after the last signed checkpoint; rows_read says how much was read.
    from_seq: int = 0
    rows_read: int = 0
    checkpoints_checked: int = 0
    last_checkpoint_seq: int | None = None


# The row recording that a checkpoint was written; the checkpoint signs this row itself, so a
# checkpoint file that lost that line no longer matches the chain.
CHECKPOINT_ACTION = "audit_checkpoint_written"


@dataclass
class ChainWalker:
    """Checks rows one by one, in seq order, against the row before and the key ring.

    Without a key ring (an offline check of an export) MACs are not checked: the hashes and the
    checkpoint signatures still are.
    """

    keyring: AuditKeyring | None
    prev_hash: str = GENESIS_HASH
    prev_seq: int = 0
    prev_key_id: str | None = None
    checked: int = 0
    # Rows from before keyed MACs (an upgrade) pass unsealed, but only as a prefix and only while no
    # checkpoint exists: the first checkpoint seals them (seal_unsealed_rows), after which none may lack one.
    allow_unsealed_prefix: bool = False
    checkpoint_hashes: dict[int, str] = field(default_factory=dict)  # seq -> hash the signed checkpoint binds
    recorded_checkpoints: set[int] = field(default_factory=set)  # seqs the chain says were checkpointed

    def check(self, event: AuditEventBase) -> str | None:
        """The problem with this row, or None (and the walker moves past it)."""
        seq = event.seq or 0
        if event.prev_hash != self.prev_hash:
            return "prev_hash does not match the previous event (an event was removed or reordered)"
        if seq != self.prev_seq + 1:
            return f"seq {self.prev_seq + 1} is missing (rows were deleted or renumbered)"
        if event.hash != _row_hash(event, self.prev_hash):
            return "hash does not match the event's contents (the event was modified)"
        problem = self._check_mac(event)
        if problem:
            return problem
        expected = self.checkpoint_hashes.get(seq)
        if expected is not None and expected != event.hash:
            return "the event differs from the signed checkpoint of this seq (the chain was rewritten)"
        if event.action == CHECKPOINT_ACTION:
            self.recorded_checkpoints.add(seq)
        self.prev_hash, self.prev_seq, self.prev_key_id = event.hash, seq, event.key_id
        self.checked += 1
        return None

    def _check_mac(self, event: AuditEventBase) -> str | None:
        if event.mac is None and self.allow_unsealed_prefix and self.prev_key_id is None:
            return None
        if event.mac is None or event.key_id is None:
            return "the event has no MAC (written or rewritten without the audit key)"
        if self.prev_key_id is not None and event.key_id != self.prev_key_id:
            rotation = event.action == ROTATION_ACTION and f"previous key {self.prev_key_id}" in event.reasons
            if not rotation:
                return f"the key changes from {self.prev_key_id} to {event.key_id} without a rotation record"
        return self.mac_problem(event)

    def mac_problem(self, event: AuditEventBase) -> str | None:
        """The row's MAC against the key ring (None without one: an offline check)."""
        if event.mac is None or event.key_id is None:
            return "the event has no MAC (written or rewritten without the audit key)"
        if self.keyring is None:
            return None
        key = self.keyring.get(event.key_id)
        if key is None:
            return f"the event is sealed with key {event.key_id}, which is not in the key ring (a replaced key?)"
        if not hmac.compare_digest(event.mac, row_mac(key, event.seq or 0, event.hash)):
            return "the MAC does not verify (the event was re-hashed or sealed without the audit key)"
        return None

    def start_after(self, seq: int, row_hash: str, key_id: str | None) -> None:
        self.prev_seq, self.prev_hash, self.prev_key_id = seq, row_hash, key_id


def read_rows(session: Session, *, after: int, batch: int = 5_000) -> Iterator[AuditEventBase]:
    """Rows after ``after`` in seq order, read in batches."""
    last = after
    while True:
        rows = session.exec(
            select(AuditEvent).where(col(AuditEvent.seq) > last).order_by(col(AuditEvent.seq)).limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq or last


def read_chain_rows(session: Session, *, after: int, batch: int = 5_000) -> Iterator[Any]:
    """What ``read_rows`` reads, as Core rows (same fields, same values): for checking the chain, which reads
    every row since the last checkpoint on each checkpoint, and ORM objects cost three times the read."""
    connection = session.connection()
    last = after
    while True:
        rows = connection.execute(
            select(*_TABLE.columns).where(_TABLE.c.seq > last).order_by(_TABLE.c.seq).limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq


def chain_head(session: Session) -> tuple[int, str | None, str | None]:
    """(seq, hash, key_id) of the newest row, (0, None, None) when there is none."""
    head = session.connection().execute(_HEAD_STATEMENT).first()
    return (head.seq, head.hash, head.key_id) if head is not None else (0, None, None)


def seal_unsealed_rows(session: Session, keyring: AuditKeyring) -> int:
    """MAC the rows written before keyed MACs existed (an upgrade); returns how many.

    Only called while no checkpoint exists yet: once one does, an unsealed row is a finding, so
    stripping MACs cannot be laundered by reopening.
    """
    key = keyring.current
    rows = session.exec(select(AuditEvent).where(col(AuditEvent.mac).is_(None)).order_by(col(AuditEvent.seq))).all()
    for row in rows:
        row.key_id = key.key_id
        row.mac = row_mac(key, row.seq or 0, row.hash)
        session.add(row)
    return len(rows)
