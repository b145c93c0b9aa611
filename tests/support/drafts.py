"""Drafts brought to a state: reported as runtime failures, approved by the operator."""

from __future__ import annotations

from incident_monitor.domain.enums import DraftStatus
from incident_monitor.domain.io import IncidentReport
from incident_monitor.service import approvals, intake
from incident_monitor.service.monitor import Monitor
from support.monitors import AGENT, OPERATOR, FakeClock


def report_runtime_failure(monitor: Monitor, title: str = "Checkout smoke test failed") -> tuple[str, str]:
    """A medium runtime failure: routed to the webhook, which needs approval. Returns (incident_id, draft_id)."""
    result = intake.report_incident(
        monitor,
        AGENT,
        IncidentReport(
            title=title, source="ci", event="ci.smoke.failed", level="warning", route_tags=["runtime-failure"]
        ),
    )
    assert result.draft_id is not None
    return result.incident_id, result.draft_id


def approve(monitor: Monitor, draft_id: str) -> str:
    requested = approvals.request_approval(monitor, AGENT, draft_id, "on-call should see this")
    decided = approvals.decide_approval(monitor, OPERATOR, requested.approval.approval_id, "approve", "looks right")
    assert decided.draft_status is DraftStatus.approved
    return requested.approval.approval_id


def approved_draft(monitor: Monitor, title: str = "Checkout smoke test failed") -> str:
    _, draft_id = report_runtime_failure(monitor, title)
    approve(monitor, draft_id)
    return draft_id


def lease_lapses(monitor: Monitor, clock: FakeClock) -> None:
    """Time passes beyond a publish claim's lease: recovery leaves a live lease to its holder (another process)."""
    clock.advance(seconds=monitor.config.store.publish_lease_seconds + 1)
