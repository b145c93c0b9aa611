"""Disable a destination its receiver declared gone, and let an operator re-enable it."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from incident_monitor.domain.destination_state import DestinationState
from incident_monitor.errors import InvalidInput
from incident_monitor.policy.principal import Principal
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor


def disable_destination(session: Session, destination_id: str, reason: str, at: datetime) -> None:
    """Mark ``destination_id`` disabled (inside the caller's unit of work); the first reason stays."""
    if session.get(DestinationState, destination_id) is None:
        session.add(DestinationState(destination_id=destination_id, disabled_at=at, reason=reason))


def enable_destination(monitor: Monitor, principal: Principal, destination_id: str) -> bool:
    """Re-enable a destination disabled by its receiver; False when it was not disabled."""
    with governed_call(
        monitor, principal, "enable_destination", {"destination_id": destination_id}, subject_id=destination_id
    ) as call:
        if monitor.config.destination(destination_id) is None:
            raise InvalidInput(f"destination_id: unknown destination '{destination_id}'; see get_status")
        state = call.session.get(DestinationState, destination_id)
        if state is None:
            call.notes.append("was not disabled")
            return False
        call.session.delete(state)
        call.notes.append(f"re-enabled (was disabled at {state.disabled_at.isoformat()}: {state.reason})")
        return True
