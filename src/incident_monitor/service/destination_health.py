"""What receivers said about a destination: disabled when declared gone (an operator re-enables it), and
how its recent publishes went (failures in a row, the last error), for status and readiness."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select
from sqlmodel import Session

from incident_monitor.domain.destination_state import (
    DISABLED_QUERY,
    DestinationDelivery,
    DestinationState,
    disabled_reasons,
)
from incident_monitor.domain.models import table_of
from incident_monitor.errors import InvalidInput
from incident_monitor.policy.principal import Principal
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor
from incident_monitor.store.engine import read_scope

_DELIVERIES = select(table_of(DestinationDelivery))


def disable_destination(session: Session, destination_id: str, reason: str, at: datetime) -> None:
    """Mark ``destination_id`` disabled (inside the caller's unit of work); the first reason stays."""
    if session.get(DestinationState, destination_id) is None:
        session.add(DestinationState(destination_id=destination_id, disabled_at=at, reason=reason))


def record_delivery(session: Session, destination_id: str, *, error: str | None, at: datetime) -> None:
    """Count a publish's outcome for ``destination_id`` (inside the caller's unit of work); no error = success."""
    row = session.get(DestinationDelivery, destination_id) or DestinationDelivery(destination_id=destination_id)
    if error is None:
        row.consecutive_failures = 0
        row.last_published_at = at
    else:
        row.consecutive_failures += 1
        row.last_error = error
        row.last_failed_at = at
    session.add(row)


def read_deliveries(monitor: Monitor, connection: Connection | None = None) -> dict[str, DestinationDelivery]:
    """destination_id → its recent delivery record: read on ``connection`` (a governed call's own, which
    already holds its snapshot), else without waiting for a unit of work in progress."""
    if connection is None:
        with read_scope(monitor.engine) as own:
            return read_deliveries(monitor, own)
    rows = connection.execute(_DELIVERIES).mappings().all()
    return {row["destination_id"]: DestinationDelivery.model_validate(dict(row)) for row in rows}


def read_disabled_on(connection: Connection) -> dict[str, str]:
    """``read_disabled`` on a connection already open (a governed call's own): no connection of its own."""
    return disabled_reasons(connection.exec_driver_sql(DISABLED_QUERY).all())


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
