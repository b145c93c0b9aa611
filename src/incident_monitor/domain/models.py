"""Tables and their public views.

Each record has a ``*Base`` with the fields callers see, a table class adding storage-only fields,
and the base doubles as the output schema of the MCP tools (SQLModel's models-as-schemas pattern).
Identifiers are named the same everywhere: ``incident_id``, ``draft_id``, ``approval_id``, …
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import Table, inspect
from sqlmodel import Field, SQLModel

from incident_monitor.domain.enums import (
    ApprovalStatus,
    Decision,
    DraftStatus,
    IncidentStatus,
    ReceiptStatus,
    Severity,
)
from incident_monitor.domain.types import JSONType, UTCDateTime, utcnow


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def table_of(model: type[SQLModel]) -> Table:
    """A table model's Core ``Table``, typed: SQLModel sets ``__table__`` without declaring it."""
    table = inspect(model).local_table
    assert isinstance(table, Table), f"{model.__name__} is not a table=True model"
    return table


def _ts(**kwargs: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, **kwargs)


def _ts_optional(**kwargs: Any) -> Any:
    return Field(default=None, sa_type=UTCDateTime, **kwargs)


# --- incidents ---------------------------------------------------------------------------------


class IncidentBase(SQLModel):
    incident_id: str = Field(primary_key=True)
    fingerprint: str = Field(index=True, unique=True)
    title: str
    detail: str
    source: str = Field(index=True)
    event: str
    level: str
    severity: Severity = Field(index=True)
    status: IncidentStatus = Field(default=IncidentStatus.open, index=True)
    risk_category: str | None = None
    risk_level: Severity | None = None
    project_id: str | None = Field(default=None, index=True)
    route_tags: list[str] = Field(default_factory=list, sa_type=JSONType)
    evidence_refs: list[str] = Field(default_factory=list, sa_type=JSONType)
    context: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    occurrence_count: int = 1
    recurrence_count: int = 0
    reported_by: str
    first_seen_at: datetime = _ts()
    last_seen_at: datetime = _ts(index=True)
    resolved_at: datetime | None = _ts_optional()
    resolved_by: str | None = None
    resolution_note: str | None = None
    last_run_id: str | None = None
    last_session_id: str | None = None


class Incident(IncidentBase, table=True):
    __tablename__ = "incidents"


class IncidentOccurrence(SQLModel, table=True):
    """One report that deduplicated into an incident (the first report is an occurrence too)."""

    __tablename__ = "incident_occurrences"

    occurrence_id: str = Field(primary_key=True)
    incident_id: str = Field(foreign_key="incidents.incident_id", index=True)
    seen_at: datetime = _ts()
    reported_by: str
    run_id: str | None = Field(default=None, index=True)
    session_id: str | None = None
    detail_digest: str
    recurrence: bool = False


# --- drafts and triage -------------------------------------------------------------------------


class DraftBase(SQLModel):
    draft_id: str = Field(primary_key=True)
    incident_id: str = Field(foreign_key="incidents.incident_id", index=True)
    status: DraftStatus = Field(default=DraftStatus.draft, index=True)
    title: str
    body: str
    severity: Severity = Field(index=True)
    source: str = Field(index=True)
    route_tags: list[str] = Field(default_factory=list, sa_type=JSONType)
    evidence: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    evidence_digest: str
    revision: int = 1
    created_at: datetime = _ts()
    updated_at: datetime = _ts(index=True)


class Draft(DraftBase, table=True):
    __tablename__ = "drafts"


class TriageRunBase(SQLModel):
    triage_run_id: str = Field(primary_key=True)
    draft_id: str = Field(foreign_key="drafts.draft_id", index=True)
    incident_id: str = Field(index=True)
    created_at: datetime = _ts()
    created_by: str
    suggested_severity: Severity
    suggested_route_tags: list[str] = Field(default_factory=list, sa_type=JSONType)
    duplicate_matches: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONType)
    similar_incidents: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONType)
    occurrence_count: int
    occurrences_per_hour: float
    findings: list[str] = Field(default_factory=list, sa_type=JSONType)
    evidence_summary: str
    evidence_digest: str


class TriageRun(TriageRunBase, table=True):
    __tablename__ = "triage_runs"


# --- approvals ---------------------------------------------------------------------------------


class ApprovalRequestBase(SQLModel):
    approval_id: str = Field(primary_key=True)
    draft_id: str = Field(foreign_key="drafts.draft_id", index=True)
    incident_id: str
    status: ApprovalStatus = Field(default=ApprovalStatus.pending, index=True)
    reason: str
    requested_by: str
    requested_at: datetime = _ts()
    evidence_digest: str
    destination_id: str
    route_id: str | None = None
    policy_version: str
    expires_at: datetime = Field(sa_type=UTCDateTime)
    decided_by: str | None = None
    decided_at: datetime | None = _ts_optional()
    decision_note: str | None = None
    used_at: datetime | None = _ts_optional()
    used_by_receipt_id: str | None = None


class ApprovalRequest(ApprovalRequestBase, table=True):
    __tablename__ = "approval_requests"


# --- receipts ----------------------------------------------------------------------------------


class ReceiptBase(SQLModel):
    receipt_id: str = Field(primary_key=True)
    draft_id: str = Field(foreign_key="drafts.draft_id", index=True)
    incident_id: str = Field(index=True)
    destination_id: str
    destination_kind: str
    route_id: str | None = None
    match_reason: str
    status: ReceiptStatus = Field(default=ReceiptStatus.pending, index=True)
    external_id: str | None = None
    external_url: str | None = None
    evidence_digest: str
    idempotency_key: str = Field(unique=True, index=True)
    approval_id: str | None = None
    attempt_count: int = 0
    error: str | None = None
    response_excerpt: str | None = None
    published_by: str
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class Receipt(ReceiptBase, table=True):
    __tablename__ = "receipts"

    # The outbox lease of a pending receipt: who is delivering it, and until when no other replica may.
    claimed_by: str | None = None
    lease_expires_at: datetime | None = _ts_optional(index=True)


# --- audit -------------------------------------------------------------------------------------


class AuditEventBase(SQLModel):
    seq: int | None = Field(default=None, primary_key=True)
    at: datetime = _ts()
    principal: str = Field(index=True)
    action: str = Field(index=True)
    decision: Decision
    reasons: list[str] = Field(default_factory=list, sa_type=JSONType)
    arguments_digest: str
    subject_id: str | None = Field(default=None, index=True)
    run_id: str | None = Field(default=None, index=True)
    prev_hash: str
    hash: str
    # The keyed MAC over seq and hash (service/audit_chain.py) and the id of the key that made it;
    # empty only on rows written before keyed MACs, until the first open seals them.
    key_id: str | None = None
    mac: str | None = None


class AuditEvent(AuditEventBase, table=True):
    __tablename__ = "audit_events"


# --- credentials -------------------------------------------------------------------------------


class ApiTokenBase(SQLModel):
    token_id: str = Field(primary_key=True)
    name: str = Field(unique=True, index=True)
    scopes: list[str] = Field(default_factory=list, sa_type=JSONType)
    created_at: datetime = _ts()
    expires_at: datetime | None = _ts_optional()
    revoked_at: datetime | None = _ts_optional()
    last_used_at: datetime | None = _ts_optional()


class ApiToken(ApiTokenBase, table=True):
    __tablename__ = "api_tokens"

    # SHA-256 of the token; the token itself is shown once and never stored.
    token_hash: str = Field(unique=True, index=True)


# --- intake keys -------------------------------------------------------------------------------


class IntakeKeyBase(SQLModel):
    """A key CI or a service uses to report for one project (and optionally one source), nothing else."""

    key_id: str = Field(primary_key=True)
    project_id: str = Field(index=True)
    source_id: str | None = None
    scopes: list[str] = Field(default_factory=list, sa_type=JSONType)  # always ["incident_monitor:report"]
    created_at: datetime = _ts()
    disabled_at: datetime | None = _ts_optional()
    last_used_at: datetime | None = _ts_optional()


class IntakeKey(IntakeKeyBase, table=True):
    __tablename__ = "intake_keys"

    # SHA-256 of the key; the key itself is shown once and never stored.
    key_hash: str = Field(unique=True, index=True)
