"""Inputs and outputs of the service functions that are not plain table views."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from incident_monitor.domain.enums import DraftStatus, IncidentStatus, Severity
from incident_monitor.domain.models import (
    ApprovalRequestBase,
    AuditEventBase,
    DraftBase,
    IncidentBase,
    ReceiptBase,
    TriageRunBase,
)


class IncidentReport(BaseModel):
    """What a reporter sends. Sizes are checked against the configured limits by the intake service."""

    title: str = Field(min_length=1, description="One line saying what failed.")
    detail: str = Field(default="", description="What happened, with the evidence an operator needs.")
    source: str = Field(min_length=1, max_length=200, description="Who observed it, e.g. 'ci' or 'automation_v2'.")
    event: str = Field(min_length=1, max_length=200, description="Event name, e.g. 'ci.smoke.failed'.")
    level: str = Field(default="error", description="critical | error | warning | info (aliases accepted).")
    fingerprint: str | None = Field(
        default=None,
        max_length=200,
        description="Stable dedupe key; computed from stable fields when absent.",
    )
    route_tags: list[str] = Field(default_factory=list)
    risk_category: str | None = Field(default=None, max_length=200)
    risk_level: Severity | None = None
    project_id: str | None = Field(default=None, max_length=200)
    run_id: str | None = Field(default=None, max_length=200)
    session_id: str | None = Field(default=None, max_length=200)
    evidence_refs: list[str] = Field(default_factory=list)
    context: dict[str, Any] = Field(default_factory=dict, description="Structured evidence (redacted before storage).")


class ReportResult(BaseModel):
    incident_id: str
    draft_id: str | None
    fingerprint: str
    severity: Severity
    status: IncidentStatus
    deduplicated: bool = Field(description="True when the report matched an existing incident's fingerprint.")
    recurrence: bool = Field(description="True when the report reopened a resolved incident.")
    occurrence_count: int
    redacted_fields: list[str] = Field(description="Fields in which secrets were found and replaced.")
    next_step: str


class DraftSummary(BaseModel):
    draft_id: str
    incident_id: str
    status: DraftStatus
    title: str
    severity: Severity
    source: str
    route_tags: list[str]
    evidence_digest: str
    revision: int
    updated_at: datetime


class IncidentPage(BaseModel):
    incidents: list[IncidentBase]
    next_offset: int | None = Field(description="Pass as offset to read the next page; null on the last page.")


class DraftPage(BaseModel):
    drafts: list[DraftSummary]
    next_offset: int | None


class ReceiptPage(BaseModel):
    receipts: list[ReceiptBase]
    next_offset: int | None


class ApprovalPage(BaseModel):
    approvals: list[ApprovalRequestBase]
    next_offset: int | None


class OccurrenceView(BaseModel):
    seen_at: datetime
    reported_by: str
    run_id: str | None
    session_id: str | None
    recurrence: bool


class IncidentDetail(BaseModel):
    incident: IncidentBase
    drafts: list[DraftSummary]
    recent_occurrences: list[OccurrenceView]
    receipts: list[ReceiptBase]
    timeline_run_id: str | None = Field(default=None, description="The run that last reported this incident.")
    timeline: list[AuditEventBase] = Field(
        default_factory=list, description="That run's audit events in order: what it did and what policy decided."
    )


class DraftDetail(BaseModel):
    draft: DraftBase
    latest_triage: TriageRunBase | None
    approvals: list[ApprovalRequestBase]
    receipts: list[ReceiptBase]
    next_step: str


class TriageResult(BaseModel):
    triage_run: TriageRunBase
    draft_status: DraftStatus
    evidence_digest: str
    evidence_changed: bool
    next_step: str


class ApprovalResult(BaseModel):
    approval: ApprovalRequestBase
    draft_status: DraftStatus
    next_step: str


class PublishResult(BaseModel):
    receipt: ReceiptBase
    draft_status: DraftStatus
    reused: bool = Field(description="True when this publish had already happened and its receipt is returned.")
    next_step: str
