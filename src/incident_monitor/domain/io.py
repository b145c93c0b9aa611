"""Inputs and outputs of the service functions that are not plain table views."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from incident_monitor.domain.enums import ApprovalStatus, Decision, DraftStatus, IncidentStatus, ReceiptStatus, Severity
from incident_monitor.domain.models import (
    ApprovalRequestBase,
    DraftBase,
    IncidentBase,
    ReceiptBase,
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
    deduplicated: bool  # matched an existing incident's fingerprint
    recurrence: bool  # reopened a resolved incident
    occurrence_count: int
    redacted_fields: list[str] = Field(description="Fields where secrets were replaced.")
    next_step: str


# Lists return summaries and get_* the details: every field below is in each tool's output schema,
# which an agent reads in tools/list on every session. Full rows stay with the service and the CLI.


class IncidentSummary(BaseModel):
    incident_id: str
    title: str
    severity: Severity
    status: IncidentStatus
    source: str
    project_id: str | None
    occurrence_count: int
    last_seen_at: datetime


class DraftSummary(BaseModel):
    draft_id: str
    incident_id: str
    status: DraftStatus
    title: str
    severity: Severity
    updated_at: datetime


class ReceiptSummary(BaseModel):
    receipt_id: str
    draft_id: str
    destination_id: str
    status: ReceiptStatus
    external_id: str | None
    external_url: str | None
    evidence_digest: str
    attempt_count: int
    error: str | None
    updated_at: datetime


class ApprovalSummary(BaseModel):
    approval_id: str
    draft_id: str
    status: ApprovalStatus
    destination_id: str
    evidence_digest: str
    policy_version: str
    requested_by: str
    expires_at: datetime
    decided_by: str | None
    decision_note: str | None


class TriageSummary(BaseModel):
    triage_run_id: str
    suggested_severity: Severity
    findings: list[str]
    evidence_summary: str


class TriageView(TriageSummary):
    suggested_route_tags: list[str]
    duplicate_matches: list[dict[str, Any]]
    similar_incidents: list[dict[str, Any]]


class TimelineEvent(BaseModel):
    at: datetime
    principal: str
    action: str
    decision: Decision
    reasons: list[str]
    subject_id: str | None


class IncidentPage(BaseModel):
    incidents: list[IncidentSummary]
    next_offset: int | None  # the offset of the next page; null on the last


class DraftPage(BaseModel):
    drafts: list[DraftSummary]
    next_offset: int | None


class ReceiptPage(BaseModel):
    receipts: list[ReceiptSummary]
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
    # The run that last reported the incident, and that run's audit events in order.
    timeline_run_id: str | None = None
    timeline: list[TimelineEvent] = Field(default_factory=list)


class DraftDetail(BaseModel):
    draft: DraftBase
    latest_triage: TriageSummary | None
    approvals: list[ApprovalSummary]
    next_step: str


class TriageResult(BaseModel):
    draft_id: str
    triage_run: TriageView
    draft_status: DraftStatus
    evidence_digest: str
    evidence_changed: bool
    next_step: str


class ApprovalResult(BaseModel):
    approval: ApprovalSummary
    draft_status: DraftStatus
    next_step: str


class PublishResult(BaseModel):
    receipt: ReceiptBase
    draft_status: DraftStatus
    reused: bool = Field(description="Already published: this is the earlier receipt.")
    next_step: str
