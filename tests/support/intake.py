"""The intake endpoint's path, the projects the intake tests declare, report bodies and stored incidents."""

from __future__ import annotations

from typing import Any

from sqlmodel import select

from incident_monitor.domain.models import Incident
from incident_monitor.service.monitor import Monitor

INTAKE = "/incident-monitor/intake/report"


PROJECTS = [
    {
        "id": "shop",
        "name": "Shop",
        "sources": ["ci", "canary"],
        "default_route_tags": ["shop"],
        "allowed_destinations": ["telemetry"],
    },
    {"id": "blog", "name": "Blog", "sources": ["ci"]},
]


def body(project_id: str = "shop", source_id: str | None = "ci", **report: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "project_id": project_id,
        "report": {"title": "Smoke test failed on main", "event": "ci.smoke.failed", "level": "error", **report},
    }
    if source_id is not None:
        payload["source_id"] = source_id
    return payload


def incidents(monitor: Monitor) -> list[Incident]:
    with monitor.session() as session:
        return list(session.exec(select(Incident)).all())
