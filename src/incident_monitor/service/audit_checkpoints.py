"""Signed checkpoints of the audit chain's head, kept outside the database, and the chain check that uses them.

A checkpoint binds a seq and that row's hash under an Ed25519 signature (the key derived from the audit
key, service/audit_keys.py). Checkpoints are appended, one JSON line each, to a file outside the data
dir, and handed to the monitor's checkpoint sinks (the publishing service's delivery to
``[audit] checkpoint_destination``, a copy beyond this host's reach). The chain records
each checkpoint written (a row of action ``audit_checkpoint_written``), so a checkpoint file that lost
lines no longer matches the chain. With them ``verify_audit_log`` detects what the hash chain alone
cannot: rows deleted from the end (the head is behind a checkpoint), every row deleted, and a chain
re-hashed after an edit (the checkpoint's hash no longer matches, and the MACs fail without the key).

Checkpoints are written every ``[audit] checkpoint_every`` rows, on ``audit verify`` and when the
monitor closes; only after the rows since the last one verified, so a tampered head is never signed.
Verification is incremental: ``verify_audit_log(..., incremental=True)`` re-reads only the rows after
the last checkpoint (plus the checkpointed rows themselves); the full check reads every row.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ValidationError
from sqlmodel import Session, col, select

from incident_monitor.domain.canonical import canonical_json
from incident_monitor.domain.enums import Decision
from incident_monitor.domain.models import AuditEvent
from incident_monitor.service.audit_chain import (
    CHECKPOINT_ACTION,
    SYSTEM_PRINCIPAL,
    AuditVerification,
    ChainWalker,
    append_audit,
    chain_head,
    read_chain_rows,
    seal_unsealed_rows,
)
from incident_monitor.service.audit_keys import AuditKeyring, default_key_dir, public_key_hex
from incident_monitor.service.monitor import Monitor

if sys.platform != "win32":
    import fcntl

logger = logging.getLogger(__name__)

CHECKPOINT_KIND = "checkpoint"
# Rows up to this seq were archived (retention): the database's first row follows it.
ARCHIVE_KIND = "archive"


class Checkpoint(BaseModel):
    kind: str = CHECKPOINT_KIND
    seq: int
    hash: str
    at: datetime
    key_id: str
    public_key: str
    signature: str

    def signed_bytes(self) -> bytes:
        return canonical_json(
            {"kind": self.kind, "seq": self.seq, "hash": self.hash, "at": self.at.isoformat(), "key_id": self.key_id}
        ).encode()


class CheckpointFileProblem(Exception):
    """The checkpoint file cannot be read as checkpoints (a line was cut or edited)."""


def sign_checkpoint(keyring: AuditKeyring, *, seq: int, row_hash: str, at: datetime, kind: str) -> Checkpoint:
    key = keyring.current
    unsigned = Checkpoint(
        kind=kind,
        seq=seq,
        hash=row_hash,
        at=at,
        key_id=key.key_id,
        public_key=public_key_hex(key.public_key),
        signature="",
    )
    unsigned.signature = key.signing_key.sign(unsigned.signed_bytes()).hex()
    return unsigned


def signature_problem(checkpoint: Checkpoint, public_keys: dict[str, Ed25519PublicKey]) -> str | None:
    """Checked against the trusted keys by id, never against the public key the line itself carries."""
    public_key = public_keys.get(checkpoint.key_id)
    if public_key is None:
        return f"checkpoint of seq {checkpoint.seq} is signed by key {checkpoint.key_id}, which is not trusted"
    try:
        public_key.verify(bytes.fromhex(checkpoint.signature), checkpoint.signed_bytes())
    except (InvalidSignature, ValueError):
        return f"checkpoint of seq {checkpoint.seq}: the signature does not verify (forged or edited)"
    return None


# --- the file ----------------------------------------------------------------------------------------


def checkpoint_file_path(monitor: Monitor) -> Path:
    configured = monitor.config.audit.checkpoint_file
    if configured is not None:
        return configured.expanduser()
    keyring = monitor.audit_keys
    base = keyring.key_file.parent if keyring.key_file is not None else default_key_dir()
    # One file per database, beside the key (outside the data dir): a SQLite data dir, or a PostgreSQL database
    # (its URL without the password), which every replica on this host then shares.
    engine = monitor.engine
    where = str(monitor.data_dir.resolve()) if engine.dialect.name == "sqlite" else engine.url.render_as_string()
    digest = hashlib.sha256(where.encode()).hexdigest()[:16]
    return base / "checkpoints" / f"{digest}.jsonl"


def parse_checkpoints(lines: Iterable[str], *, source: str) -> list[Checkpoint]:
    out = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(Checkpoint.model_validate_json(line))
        except ValidationError:
            raise CheckpointFileProblem(f"{source} line {number} is not a checkpoint (cut or edited)") from None
    return out


def read_checkpoints(path: Path) -> list[Checkpoint]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return parse_checkpoints(text.splitlines(), source=str(path))


_file_lock = threading.Lock()


def append_checkpoint_line(path: Path, checkpoint: Checkpoint) -> None:
    """Append-only: O_APPEND, one line per write, flock against other processes, fsync before returning."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    line = (checkpoint.model_dump_json() + "\n").encode()
    with _file_lock:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if sys.platform != "win32":
                fcntl.flock(descriptor, fcntl.LOCK_EX)
            os.write(descriptor, line)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


# --- verification ------------------------------------------------------------------------------------


def _broken(walker: ChainWalker, seq: int | None, problem: str, **extra: int | None) -> AuditVerification:
    return AuditVerification(ok=False, events_checked=walker.checked, first_broken_seq=seq, problem=problem, **extra)  # type: ignore[arg-type]


def verify_rows(
    rows: Iterable[AuditEvent] | Iterable[object],
    checkpoints: list[Checkpoint],
    *,
    keyring: AuditKeyring | None,
    public_keys: dict[str, Ed25519PublicKey],
    head_seq: int,
    start: tuple[int, str, str | None] | None = None,
    verified: set[bytes] | None = None,
) -> AuditVerification:
    """The chain check shared by the database and an exported file.

    ``rows`` run from after ``start`` (seq, hash, key id) to the head, or from the archive anchor /
    genesis when ``start`` is None. ``head_seq`` is the newest row's seq (0 when none).
    """
    walker = ChainWalker(keyring, allow_unsealed_prefix=not checkpoints)
    for checkpoint in checkpoints:
        # A line verified before in this process (same signed bytes, same signature) is not verified again.
        seen = hashlib.sha256(checkpoint.signed_bytes() + checkpoint.signature.encode()).digest()
        if verified is not None and seen in verified:
            continue
        problem = signature_problem(checkpoint, public_keys)
        if problem:
            return _broken(walker, checkpoint.seq, problem)
        if verified is not None:
            verified.add(seen)
    archives = [c for c in checkpoints if c.kind == ARCHIVE_KIND]
    heads = [c for c in checkpoints if c.kind == CHECKPOINT_KIND]
    walker.checkpoint_hashes = {c.seq: c.hash for c in checkpoints}
    last = max((c.seq for c in checkpoints), default=None)
    if start is not None:
        walker.start_after(*start)
    elif archives:
        anchor = max(archives, key=lambda c: c.seq)
        walker.start_after(anchor.seq, anchor.hash, None)
    from_seq = walker.prev_seq
    if last is not None and head_seq < last:
        what = "every row was deleted" if head_seq == 0 else f"the chain ends at seq {head_seq}"
        return _broken(
            walker,
            head_seq + 1,
            f"{what} but a signed checkpoint covers seq {last}: rows were deleted from the end (truncation)",
            last_checkpoint_seq=last,
        )
    read = 0
    for row in rows:
        read += 1
        problem = walker.check(row)  # type: ignore[arg-type]
        if problem:
            return _broken(walker, row.seq, problem, rows_read=read, from_seq=from_seq)  # type: ignore[attr-defined]
    if walker.prev_seq != head_seq:
        return _broken(walker, walker.prev_seq + 1, f"seq {walker.prev_seq + 1} is missing (rows were deleted)")
    file_seqs = {c.seq for c in heads}
    missing = sorted(walker.recorded_checkpoints - file_seqs)
    if missing:
        return _broken(
            walker,
            missing[0],
            f"the chain records a checkpoint of seq {missing[0]} that the checkpoint file lacks "
            "(the file was truncated, replaced or deleted)",
            rows_read=read,
        )
    return AuditVerification(
        ok=True,
        events_checked=walker.checked,
        head_hash=walker.prev_hash if head_seq else None,
        head_seq=head_seq or None,
        from_seq=from_seq,
        rows_read=read,
        checkpoints_checked=len(checkpoints),
        last_checkpoint_seq=last,
    )


def verify_audit_log(monitor: Monitor, session: Session, *, incremental: bool = False) -> AuditVerification:
    """Check the database's chain against the key ring and the checkpoint file.

    Incremental: only the rows after the newest checkpoint are walked (the rows each checkpoint names
    are still compared with it, one indexed read); full: every row.
    """
    path = checkpoint_file_path(monitor)
    try:
        checkpoints = read_checkpoints(path)
    except CheckpointFileProblem as exc:
        return AuditVerification(ok=False, events_checked=0, problem=str(exc))
    keyring = monitor.audit_keys
    public_keys = keyring.public_keys()
    head_seq, _, _ = chain_head(session)
    heads = [c for c in checkpoints if c.kind == CHECKPOINT_KIND]
    if incremental and heads and head_seq >= max(c.seq for c in heads):
        newest = max(heads, key=lambda c: c.seq)
        pinned = session.exec(
            select(AuditEvent).where(col(AuditEvent.seq).in_(sorted({c.seq for c in checkpoints})))
        ).all()
        by_seq = {row.seq: row for row in pinned}
        archived_through = _first_after_archive(checkpoints)
        for checkpoint in heads:
            row = by_seq.get(checkpoint.seq)
            if row is None and checkpoint.seq > archived_through:
                return AuditVerification(
                    ok=False,
                    events_checked=0,
                    first_broken_seq=checkpoint.seq,
                    problem=f"seq {checkpoint.seq}, covered by a signed checkpoint, is missing (rows were deleted)",
                )
            if row is not None and row.hash != checkpoint.hash:
                return AuditVerification(
                    ok=False,
                    events_checked=0,
                    first_broken_seq=checkpoint.seq,
                    problem="the event differs from the signed checkpoint of this seq (the chain was rewritten)",
                )
        anchor = by_seq.get(newest.seq)
        if anchor is not None:
            problem = ChainWalker(keyring).mac_problem(anchor)
            if problem:
                return AuditVerification(ok=False, events_checked=0, first_broken_seq=anchor.seq, problem=problem)
            result = verify_rows(
                read_chain_rows(session, after=newest.seq),
                checkpoints,
                keyring=keyring,
                public_keys=public_keys,
                head_seq=head_seq,
                start=(newest.seq, anchor.hash, anchor.key_id),
                verified=keyring.verified_checkpoints,
            )
            return result.model_copy(update={"rows_read": result.rows_read + len(pinned)})
    return verify_rows(
        read_chain_rows(session, after=_first_after_archive(checkpoints)),
        checkpoints,
        keyring=keyring,
        public_keys=public_keys,
        head_seq=head_seq,
        verified=keyring.verified_checkpoints,
    )


def _first_after_archive(checkpoints: list[Checkpoint]) -> int:
    return max((c.seq for c in checkpoints if c.kind == ARCHIVE_KIND), default=0)


# --- writing checkpoints -----------------------------------------------------------------------------


def seal_before_first_checkpoint(monitor: Monitor) -> int:
    """Rows from before keyed MACs get theirs, once: only while no checkpoint exists (see seal_unsealed_rows)."""
    try:
        if read_checkpoints(checkpoint_file_path(monitor)):
            return 0
    except CheckpointFileProblem:
        return 0
    with monitor.session() as session:
        sealed = seal_unsealed_rows(session, monitor.audit_keys)
    if sealed:
        logger.warning("sealed %d audit rows written before keyed MACs", sealed)
    return sealed


def write_checkpoint(monitor: Monitor, *, archive_through: int | None = None) -> Checkpoint | None:
    """Verify what is new since the last checkpoint, record the checkpoint in the chain, and sign that row.

    The signed seq is the recording row itself, so the head right after a checkpoint is covered by it
    (deleting even the last row shows). ``archive_through``: also sign an archive checkpoint of that
    seq (retention: the rows up to it leave the database next). The lines are written and fsynced
    before the row commits; a crash in between leaves a checkpoint ahead of the chain, which verify
    reports: a false alarm rather than a silent gap. Returns None when the chain does not verify
    (nothing is signed over a tampered chain).
    """
    keyring = monitor.audit_keys
    if not keyring.signs_checkpoints:
        return None
    path = checkpoint_file_path(monitor)
    seal_before_first_checkpoint(monitor)
    with monitor.session() as session:
        verification = verify_audit_log(monitor, session, incremental=True)
        if not verification.ok:
            logger.error("audit chain does not verify, no checkpoint written: %s", verification.problem)
            return None
        lines: list[Checkpoint] = []
        if archive_through is not None:
            archived = session.get(AuditEvent, archive_through)
            if archived is None:
                return None
            lines.append(
                sign_checkpoint(
                    keyring, seq=archive_through, row_hash=archived.hash, at=monitor.clock(), kind=ARCHIVE_KIND
                )
            )
        row = append_audit(
            session,
            keyring,
            at=monitor.clock(),
            principal=SYSTEM_PRINCIPAL,
            action=CHECKPOINT_ACTION,
            decision=Decision.allow,
            reasons=[
                f"signed checkpoint of this row written (rows verified from seq {verification.from_seq})",
                *([f"archive checkpoint of seq {archive_through}"] if archive_through is not None else []),
            ],
            arguments={"archive_through": archive_through},
            subject_id="audit-checkpoint",
        )
        checkpoint = sign_checkpoint(
            keyring, seq=row.seq or 0, row_hash=row.hash, at=monitor.clock(), kind=CHECKPOINT_KIND
        )
        for line in [*lines, checkpoint]:
            append_checkpoint_line(path, line)
    monitor.audit_rows_since_checkpoint = 0
    if monitor.config.audit.checkpoint_destination and not monitor.checkpoint_sinks:
        logger.warning(
            "audit.checkpoint_destination is set but this monitor has no checkpoint delivery "
            "(assemble it with publishing.attach_checkpoint_delivery); the file copy is written"
        )
    for sink in monitor.checkpoint_sinks:
        sink(monitor, checkpoint.model_dump(mode="json"))
    return checkpoint


def after_decision(monitor: Monitor) -> None:
    """Called after every recorded decision: a checkpoint every ``checkpoint_every`` rows, and one on close."""
    if write_checkpoint_on_close not in monitor.on_close:
        monitor.on_close.append(write_checkpoint_on_close)
    monitor.audit_rows_since_checkpoint += 1
    if monitor.audit_rows_since_checkpoint >= monitor.config.audit.checkpoint_every:
        write_checkpoint(monitor)


def write_checkpoint_on_close(monitor: Monitor) -> None:
    if monitor.audit_rows_since_checkpoint:
        try:
            write_checkpoint(monitor)
        except Exception:  # closing must not fail on it: the next verify writes one
            logger.exception("could not write the audit checkpoint on close")
