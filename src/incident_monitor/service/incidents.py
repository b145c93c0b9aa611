"""Resolving incidents. Resolved incidents stay for audit; a recurrence reopens them."""

from __future__ import annotations

from incident_monitor.domain.enums import IncidentStatus
from incident_monitor.domain.models import IncidentBase
from incident_monitor.domain.transitions import check_incident_transition
from incident_monitor.policy.principal import Principal
from incident_monitor.service.approvals import clean_note
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.queries import get_incident_row


def resolve_incident(monitor: Monitor, principal: Principal, incident_id: str, resolution_note: str) -> IncidentBase:
    arguments = {"incident_id": incident_id, "resolution_note": resolution_note}
    with governed_call(monitor, principal, "resolve_incident", arguments, subject_id=incident_id) as call:
        note = clean_note("resolution_note", resolution_note)
        incident = get_incident_row(call.session, incident_id)
        check_incident_transition(incident.incident_id, incident.status, IncidentStatus.resolved)
        now = monitor.clock()
        incident.status = IncidentStatus.resolved
        incident.resolved_at = now
        incident.resolved_by = principal.name
        incident.resolution_note = note
        call.session.add(incident)
        call.session.flush()
        return IncidentBase.model_validate(incident, from_attributes=True)
