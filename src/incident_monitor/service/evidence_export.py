"""Evidence export: incidents, drafts, approvals, receipts and the audit chain with its checkpoints, as JSON lines.

One record per line, ``{"kind": ..., "data": {...}}``, after a header naming the format and the
checkpoints' public keys. ``verify_export_file`` checks an export (or a retention archive, the same
format) offline: the hash chain, the signed checkpoints against a public key the verifier trusts
(``audit public-key`` prints it; without one, the keys the file itself names, which proves only that
the file is self-consistent), truncation against the newest checkpoint, and the MACs when the audit
key is at hand. Exports hold what the database holds (already redacted); they are written 0600.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ValidationError
from sqlmodel import Session, col, select

from incident_monitor.domain.models import (
    ApprovalRequest,
    AuditEventBase,
    Draft,
    Incident,
    IncidentOccurrence,
    Receipt,
    TriageRun,
)
from incident_monitor.errors import InvalidInput
from incident_monitor.policy.principal import Principal
from incident_monitor.service.audit_chain import AuditVerification, read_rows
from incident_monitor.service.audit_checkpoints import (
    Checkpoint,
    checkpoint_file_path,
    read_checkpoints,
    verify_rows,
    write_checkpoint,
)
from incident_monitor.service.audit_keys import AuditKeyring, load_public_key, public_key_hex
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor

FORMAT = "incident-monitor-evidence/1"
AUDIT_KIND = "audit_event"
CHECKPOINT_LINE_KIND = "checkpoint"
# Domain records in the order they are written (parents first) and the table each comes from.
RECORD_KINDS: dict[str, type[Any]] = {
    "incident": Incident,
    "occurrence": IncidentOccurrence,
    "draft": Draft,
    "triage_run": TriageRun,
    "approval": ApprovalRequest,
    "receipt": Receipt,
}


class ExportSummary(BaseModel):
    path: str
    counts: dict[str, int]
    head_seq: int | None
    public_keys: dict[str, str]


def _line(kind: str, data: dict[str, Any]) -> bytes:
    return (json.dumps({"kind": kind, "data": data}, sort_keys=True, default=str) + "\n").encode()


class EvidenceWriter:
    """A new 0600 file (never over an existing one), fsynced when closed."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise InvalidInput(f"output: {path} exists already; choose a new file name") from None
        self.path = path
        self.counts: dict[str, int] = {}

    def write(self, kind: str, data: dict[str, Any]) -> None:
        os.write(self._fd, _line(kind, data))
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def header(self, keyring: AuditKeyring, **extra: Any) -> None:
        keys = {key_id: public_key_hex(key) for key_id, key in keyring.public_keys().items()}
        os.write(self._fd, _line("export", {"format": FORMAT, "public_keys": keys, **extra}))

    def audit(self, rows: Iterable[AuditEventBase], checkpoints: Iterable[Checkpoint]) -> None:
        for row in rows:
            self.write(AUDIT_KIND, AuditEventBase.model_validate(row, from_attributes=True).model_dump(mode="json"))
        for checkpoint in checkpoints:
            self.write(CHECKPOINT_LINE_KIND, checkpoint.model_dump(mode="json"))

    def close(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)


def _records(session: Session, table: type[Any]) -> Iterator[dict[str, Any]]:
    key = next(iter(table.__table__.primary_key.columns)).name
    for row in session.exec(select(table).order_by(col(getattr(table, key)))):
        yield row.model_dump(mode="json")


def export_evidence(monitor: Monitor, principal: Principal, output: Path) -> ExportSummary:
    """Everything, with a fresh checkpoint first so the exported head is covered by a signature."""
    with governed_call(monitor, principal, "export_evidence", {"output": output.name}) as call:
        call.notes.append("export written to a local file (its name only is recorded)")
    checkpoint = write_checkpoint(monitor)
    if checkpoint is None:
        raise InvalidInput("the audit chain does not verify: run `incident-monitor audit verify` first")
    writer = EvidenceWriter(output)
    try:
        writer.header(monitor.audit_keys, exported_at=monitor.clock().isoformat())
        with monitor.session() as session:
            for kind, table in RECORD_KINDS.items():
                for data in _records(session, table):
                    writer.write(kind, data)
            checkpoints = [c for c in read_checkpoints(checkpoint_file_path(monitor)) if c.seq <= checkpoint.seq]
            archived = max((c.seq for c in checkpoints if c.kind == "archive"), default=0)
            writer.audit((r for r in read_rows(session, after=archived) if (r.seq or 0) <= checkpoint.seq), checkpoints)
    finally:
        writer.close()
    return ExportSummary(
        path=str(output),
        counts=writer.counts,
        head_seq=checkpoint.seq,
        public_keys={k: public_key_hex(v) for k, v in monitor.audit_keys.public_keys().items()},
    )


# --- offline verification -----------------------------------------------------------------------------


class ExportVerification(BaseModel):
    audit: AuditVerification
    counts: dict[str, int]
    trusted_keys: str  # "given" (public keys passed in) or "self-declared" (the file's own header)
    macs_checked: bool


def verify_export_file(
    path: Path, *, public_keys: list[str] | None = None, keyring: AuditKeyring | None = None
) -> ExportVerification:
    """Check an export or archive file with no database: see the module docstring for what is proved."""
    rows: list[AuditEventBase] = []
    checkpoints: list[Checkpoint] = []
    counts: dict[str, int] = {}
    declared: dict[str, str] = {}
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"file: cannot read {path} ({exc.strerror})") from None
    with handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
                kind, data = record["kind"], record["data"]
                if kind == "export":
                    declared = dict(data.get("public_keys", {}))
                elif kind == AUDIT_KIND:
                    rows.append(AuditEventBase.model_validate(data))
                elif kind == CHECKPOINT_LINE_KIND:
                    checkpoints.append(Checkpoint.model_validate(data))
            except (ValueError, KeyError, TypeError, ValidationError):
                raise InvalidInput(f"file: line {number} of {path} is not an evidence record (cut or edited)") from None
            counts[kind] = counts.get(kind, 0) + 1
    if public_keys:
        given = [load_public_key(text) for text in public_keys]
        given_hex = {public_key_hex(k): k for k in given}
        trusted: dict[str, Ed25519PublicKey] = {
            c.key_id: given_hex[c.public_key] for c in checkpoints if c.public_key in given_hex
        }
        trust = "given"
    else:
        trusted = {key_id: load_public_key(text) for key_id, text in declared.items()}
        trust = "self-declared"
    rows.sort(key=lambda r: r.seq or 0)
    archived = max((c.seq for c in checkpoints if c.kind == "archive"), default=0)
    head = (rows[-1].seq or 0) if rows else archived
    result = verify_rows(rows, checkpoints, keyring=keyring, public_keys=trusted, head_seq=head)
    return ExportVerification(audit=result, counts=counts, trusted_keys=trust, macs_checked=keyring is not None)


def write_audit_archive(
    monitor: Monitor, session: Session, output: Path, *, first_after: int, through: int
) -> dict[str, int]:
    """Rows ``first_after`` < seq <= ``through`` and the checkpoints up to ``through``, in the export format."""
    writer = EvidenceWriter(output)
    try:
        writer.header(monitor.audit_keys, archived_through=through)
        checkpoints = [c for c in read_checkpoints(checkpoint_file_path(monitor)) if c.seq <= through]
        writer.audit((r for r in read_rows(session, after=first_after) if (r.seq or 0) <= through), checkpoints)
    finally:
        writer.close()
    return writer.counts
