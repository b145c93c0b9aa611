"""Which incident and agent run a governed call belongs to, from the ids it names.

A refused call joins the timeline of the run whose draft, incident, approval or receipt it named
(``governed``), and a self-monitoring incident links to the caller's run and session (``self_monitoring``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from incident_monitor.domain.models import ApprovalRequest, Draft, Incident, Receipt
from incident_monitor.service.monitor import Monitor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunLink:
    incident: Incident | None
    run_id: str | None
    session_id: str | None


def _incident_for(session: Session, ref: str) -> Incident | None:
    if ref.startswith("inc_"):
        return session.get(Incident, ref)
    row: Draft | ApprovalRequest | Receipt | None = None
    if ref.startswith("drf_"):
        row = session.get(Draft, ref)
    elif ref.startswith("apr_"):
        row = session.get(ApprovalRequest, ref)
    elif ref.startswith("rcp_"):
        row = session.get(Receipt, ref)
    return session.get(Incident, row.incident_id) if row is not None else None


def link_call(monitor: Monitor, subject_id: str | None, arguments: Any, run_id: str | None) -> RunLink:
    """The incident the call's subject or arguments name (the first found), with its run and session."""
    refs = [subject_id] if subject_id else []
    if isinstance(arguments, dict):
        refs += [
            str(arguments[k])
            for k in ("draft_id", "incident_id", "approval_id", "receipt_id")
            if isinstance(arguments.get(k), str)
        ]
    with monitor.session() as session:
        for ref in refs:
            incident = _incident_for(session, ref)
            if incident is not None:
                return RunLink(incident, run_id or incident.last_run_id, incident.last_session_id)
    return RunLink(None, run_id, None)


def related_run(monitor: Monitor, arguments: Any) -> str | None:
    """The run a refused call belongs to, from the draft/incident/approval/receipt it names (None if none)."""
    try:
        return link_call(monitor, None, arguments, None).run_id
    except Exception:  # a lookup problem must not stop the refusal from being recorded
        logger.exception("could not find the run of a refused call")
        return None
