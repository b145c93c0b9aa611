"""A governance finding: what rule fired, how bad, the evidence, and what to do about it."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, Field

from incident_monitor.domain.enums import Severity


class Finding(BaseModel):
    rule_id: str
    severity: Severity
    title: str
    detail: str
    evidence_refs: list[str] = Field(
        description="What the finding is about: destination:<id>, route:<id>, principal:<name>, audit:seq:<n>, …"
    )
    recommendation: str


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Most severe first, then by rule and evidence, so the same state gives the same list."""
    return sorted(findings, key=lambda f: (-f.severity.rank, f.rule_id, f.evidence_refs))


def count_by_severity(findings: Iterable[Finding]) -> dict[str, int]:
    counts = {s.value: 0 for s in Severity}
    for finding in findings:
        counts[finding.severity.value] += 1
    return counts
