"""The vocabulary of states and levels (values are part of the public contract)."""

from __future__ import annotations

from enum import StrEnum


class Severity(StrEnum):
    critical = "critical"
    high = "high"
    medium = "medium"
    low = "low"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]

    @classmethod
    def highest(cls, *values: Severity | None) -> Severity:
        present = [v for v in values if v is not None]
        return max(present, key=lambda s: s.rank) if present else cls.low


_SEVERITY_RANK = {Severity.low: 0, Severity.medium: 1, Severity.high: 2, Severity.critical: 3}


class IncidentStatus(StrEnum):
    open = "open"
    triaged = "triaged"
    published = "published"
    resolved = "resolved"


class DraftStatus(StrEnum):
    draft = "draft"
    approval_required = "approval_required"
    approved = "approved"
    denied = "denied"
    publishing = "publishing"
    published = "published"
    publish_failed = "publish_failed"


class ApprovalStatus(StrEnum):
    pending = "pending"
    approved = "approved"
    denied = "denied"
    used = "used"
    superseded = "superseded"


class ReceiptStatus(StrEnum):
    pending = "pending"
    published = "published"
    commented = "commented"
    failed = "failed"
    blocked = "blocked"


class ApprovalPolicy(StrEnum):
    always = "always"
    never = "never"
    high_risk = "high_risk"
    inherit = "inherit"


class Decision(StrEnum):
    allow = "allow"
    deny = "deny"
    approval_required = "approval_required"
    rejected = "rejected"
    error = "error"
