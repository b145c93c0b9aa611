"""Shared set-up for the console tests: a served monitor with an operator, a viewer and seeded incidents."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from incident_monitor.domain.io import IncidentReport, ReportResult
from incident_monitor.policy.principal import Principal
from incident_monitor.service.approvals import request_approval
from incident_monitor.service.intake import report_incident
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.tokens import create_token
from support.http_helpers import http_server
from support.monitors import AGENT, OPERATOR, FakeClock, MonitorFactory, flow_config

OPERATOR_SCOPES = ["read", "approve", "resolve", "governance", "report", "route_preview"]


@dataclass
class Served:
    monitor: Monitor
    base: str
    operator_token: str  # principal "ops"
    viewer_token: str  # principal "viewer": read only
    clock: FakeClock

    def report(self, title: str, *, by: Principal = AGENT, **fields: Any) -> ReportResult:
        report = IncidentReport(
            title=title,
            source=fields.pop("source", "ci"),
            event=fields.pop("event", "ci.smoke.failed"),
            **fields,
        )
        return report_incident(self.monitor, by, report)

    def pending_approval(self, title: str, *, by: Principal = AGENT, **fields: Any) -> tuple[ReportResult, str]:
        """An incident whose draft routes to the webhook (approval required) with a pending request."""
        result = self.report(title, by=by, route_tags=["runtime-failure"], **fields)
        assert result.draft_id is not None
        approval = request_approval(self.monitor, by, result.draft_id, f"publish {title}").approval
        return result, approval.approval_id


@contextmanager
def serve(make_monitor: MonitorFactory, clock: FakeClock) -> Iterator[Served]:
    """The HTTP app on 127.0.0.1 over a fresh monitor, with tokens for "ops" (operator) and "viewer" (read)."""
    # Every project the tests report under is declared: project ids match declared ones exactly.
    projects = [
        {"id": "demo", "sources": ["ci"]},
        {"id": "infra", "sources": ["node-agent", "ci"]},
        {"id": "shop", "sources": ["prober", "ci"]},
        {"id": "billing", "sources": ["console"]},
    ]
    monitor = make_monitor(flow_config(projects=projects))
    operator = create_token(monitor, OPERATOR, name="ops", scopes=OPERATOR_SCOPES).secret
    viewer = create_token(monitor, OPERATOR, name="viewer", scopes=["read"]).secret
    with http_server(monitor) as base:
        yield Served(monitor, base, operator, viewer, clock)
