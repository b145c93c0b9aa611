"""Reports through an intake key: the key's project binding decides project, source and default tags.

A report can add route tags or a risk level (raising its approval requirement), never change the
project or source its key is bound to; the project's allowed destinations are enforced by the
routing decision itself (policy/route_decision.py), so preview and publish agree.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from incident_monitor.domain.enums import Decision, Severity
from incident_monitor.domain.io import IncidentReport, ReportResult
from incident_monitor.domain.models import IntakeKeyBase
from incident_monitor.errors import InvalidInput, PermissionDenied
from incident_monitor.service import intake
from incident_monitor.service.governed import record_decision
from incident_monitor.service.intake_keys import key_principal
from incident_monitor.service.monitor import Monitor


class ProjectUnknown(InvalidInput):
    code = "project_unknown"


class SourceUnknown(InvalidInput):
    code = "source_unknown"


class KeyNotAllowed(PermissionDenied):
    code = "key_not_allowed"


class IntakeReportBody(BaseModel):
    """The report fields a reporter decides; project and source come from the key's binding."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    title: str = Field(min_length=1)
    detail: str = ""
    event: str = Field(min_length=1, max_length=200)
    level: str = "error"
    fingerprint: str | None = Field(default=None, max_length=200)
    route_tags: list[str] = Field(default_factory=list)
    risk_category: str | None = Field(default=None, max_length=200)
    risk_level: Severity | None = None
    run_id: str | None = Field(default=None, max_length=200)
    session_id: str | None = Field(default=None, max_length=200)
    evidence_refs: list[str] = Field(default_factory=list)
    context: dict[str, Any] = Field(default_factory=dict)


class IntakeRequest(BaseModel):
    """``POST /incident-monitor/intake/report``."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    project_id: str = Field(min_length=1, max_length=64)
    source_id: str | None = Field(
        default=None, min_length=1, max_length=200, description="Required unless the key is bound to a source."
    )
    report: IntakeReportBody


def _refuse(
    monitor: Monitor, key: IntakeKeyBase, request: IntakeRequest, error: InvalidInput | PermissionDenied
) -> InvalidInput | PermissionDenied:
    decision = Decision.deny if isinstance(error, PermissionDenied) else Decision.rejected
    arguments = {"project_id": request.project_id, "source_id": request.source_id}
    record_decision(monitor, key_principal(key), "report_incident", decision, error.reasons, arguments)
    return error


def report_for_project(monitor: Monitor, key: IntakeKeyBase, request: IntakeRequest) -> ReportResult:
    """Bind the report to the key's project and source, then run the one intake service."""
    project = monitor.config.project(request.project_id)
    if project is None:
        raise _refuse(
            monitor,
            key,
            request,
            ProjectUnknown(f"project_id: '{request.project_id}' is not a configured project; check the id"),
        )
    if key.project_id != project.id:
        raise _refuse(
            monitor,
            key,
            request,
            KeyNotAllowed(f"project_id: this intake key reports for project '{key.project_id}' only"),
        )
    source = request.source_id or key.source_id
    if source is None:
        raise _refuse(
            monitor,
            key,
            request,
            InvalidInput(f"source_id: required for this key; use one of: {', '.join(project.sources) or '(none)'}"),
        )
    if key.source_id is not None and source != key.source_id:
        raise _refuse(
            monitor,
            key,
            request,
            KeyNotAllowed(f"source_id: this intake key reports for source '{key.source_id}' only"),
        )
    if source not in project.sources:
        raise _refuse(
            monitor,
            key,
            request,
            SourceUnknown(
                f"source_id: '{source[:64]}' is not a source of project '{project.id}'; "
                f"use one of: {', '.join(project.sources) or '(none configured)'}"
            ),
        )
    body = request.report
    report = IncidentReport(
        **body.model_dump(exclude={"route_tags"}),
        source=source,
        project_id=project.id,
        # The project's default tags always apply; the report may add its own, never remove these.
        route_tags=sorted({*project.default_route_tags, *body.route_tags}),
    )
    return intake.report_incident(monitor, key_principal(key), report)
