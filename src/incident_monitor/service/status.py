"""Readiness: can the monitor take reports, preview routes and publish, per destination."""

from __future__ import annotations

from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlmodel import col, func, select

from incident_monitor import __version__
from incident_monitor.domain.enums import ApprovalStatus, IncidentStatus
from incident_monitor.domain.models import ApprovalRequest, Incident
from incident_monitor.policy.principal import Principal
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor


class Readiness(BaseModel):
    config_valid: bool
    ingest_ready: bool
    route_preview_ready: bool
    publish_ready: bool


class DestinationStatus(BaseModel):
    destination_id: str
    kind: str
    enabled: bool
    ready: bool
    reasons: list[str]
    approval_required_by_default: bool


class CallerView(BaseModel):
    principal: str
    scopes: list[str]


class StatusView(BaseModel):
    version: str
    policy_version: str
    readiness: Readiness
    destinations: list[DestinationStatus]
    routes: int
    default_destination: str | None
    open_incidents: int
    pending_approvals: int
    caller: CallerView
    problems: list[str] = Field(description="What keeps the monitor from being fully ready, and what to fix.")


def get_status(monitor: Monitor, principal: Principal) -> StatusView:
    with governed_call(monitor, principal, "get_status", {}) as call:
        session = call.session
        problems: list[str] = []
        try:
            session.exec(text("SELECT 1"))  # type: ignore[call-overload]
            ingest_ready = True
        except Exception:
            ingest_ready = False
            problems.append("database not reachable: check the data directory")
        destinations: list[DestinationStatus] = []
        for config in monitor.config.destinations:
            readiness = monitor.readiness(config.id)
            reasons = list(readiness.reasons) if config.enabled else ["disabled in config"]
            destinations.append(
                DestinationStatus(
                    destination_id=config.id,
                    kind=config.kind,
                    enabled=config.enabled,
                    ready=config.enabled and readiness.ready,
                    reasons=reasons,
                    approval_required_by_default=config.approval_required_by_default,
                )
            )
            problems.extend(f"destination '{config.id}': {r}" for r in reasons)
        route_preview_ready = bool(monitor.config.routes or monitor.config.default_destination)
        if not route_preview_ready:
            problems.append("no routes and no default destination configured: every publish would be blocked")
        publish_ready = any(d.ready for d in destinations)
        if not destinations:
            problems.append("no destinations configured: add [[destinations]] to the config")
        open_count = session.exec(
            select(func.count()).select_from(Incident).where(col(Incident.status) != IncidentStatus.resolved)
        ).one()
        pending = session.exec(
            select(func.count()).select_from(ApprovalRequest).where(ApprovalRequest.status == ApprovalStatus.pending)
        ).one()
        return StatusView(
            version=__version__,
            policy_version=monitor.config.policy_version,
            readiness=Readiness(
                config_valid=True,  # an invalid config stops startup, so a running server has a valid one
                ingest_ready=ingest_ready,
                route_preview_ready=route_preview_ready,
                publish_ready=publish_ready,
            ),
            destinations=destinations,
            routes=len(monitor.config.routes),
            default_destination=monitor.config.default_destination.destination_id
            if monitor.config.default_destination
            else None,
            open_incidents=open_count,
            pending_approvals=pending,
            caller=CallerView(principal=principal.name, scopes=sorted(principal.scopes)),
            problems=problems,
        )
