"""State machines for incidents and drafts. Illegal transitions are refused with a clear error."""

from __future__ import annotations

from incident_monitor.domain.enums import DraftStatus, IncidentStatus
from incident_monitor.errors import InvalidTransition

DRAFT_TRANSITIONS: dict[DraftStatus, frozenset[DraftStatus]] = {
    DraftStatus.draft: frozenset({DraftStatus.approval_required, DraftStatus.publishing}),
    # Back to `draft` whenever the evidence changes: the old review no longer applies.
    DraftStatus.approval_required: frozenset({DraftStatus.approved, DraftStatus.denied, DraftStatus.draft}),
    DraftStatus.approved: frozenset({DraftStatus.publishing, DraftStatus.draft}),
    DraftStatus.denied: frozenset({DraftStatus.draft}),
    DraftStatus.publishing: frozenset({DraftStatus.published, DraftStatus.publish_failed}),
    DraftStatus.publish_failed: frozenset({DraftStatus.publishing, DraftStatus.draft}),
    DraftStatus.published: frozenset(),
}

INCIDENT_TRANSITIONS: dict[IncidentStatus, frozenset[IncidentStatus]] = {
    IncidentStatus.open: frozenset({IncidentStatus.triaged, IncidentStatus.published, IncidentStatus.resolved}),
    IncidentStatus.triaged: frozenset({IncidentStatus.published, IncidentStatus.resolved}),
    IncidentStatus.published: frozenset({IncidentStatus.resolved}),
    # A recurrence reopens a resolved incident; its history stays.
    IncidentStatus.resolved: frozenset({IncidentStatus.open}),
}

_DRAFT_HINTS: dict[DraftStatus, str] = {
    DraftStatus.published: "it is already published; read its receipt with list_receipts",
    DraftStatus.denied: "an operator denied it; keep the evidence, and re-run triage_draft only if the evidence "
    "really changed",
    DraftStatus.publishing: "a publish is in progress; read list_receipts",
}


def check_draft_transition(draft_id: str, current: DraftStatus, target: DraftStatus) -> None:
    if target not in DRAFT_TRANSITIONS[current]:
        hint = _DRAFT_HINTS.get(current, "see DESIGN.md for the draft states")
        raise InvalidTransition(f"draft {draft_id} cannot go from {current.value} to {target.value}: {hint}")


def check_incident_transition(incident_id: str, current: IncidentStatus, target: IncidentStatus) -> None:
    if target not in INCIDENT_TRANSITIONS[current]:
        raise InvalidTransition(f"incident {incident_id} cannot go from {current.value} to {target.value}")
