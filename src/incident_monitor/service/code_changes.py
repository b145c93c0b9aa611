"""Code changes delegated to a coding-agent platform (issue 15, seed 002): requests, follow-ups, reads, stop.

``request_code_change`` renders the brief (service/code_change_brief.py) and stores it as a draft (event
``code_change.requested``) that routing sends only to a ``coding_agent`` destination and that always needs an
approval bound to its digest; the launch is ``publish_draft`` of that draft (the adapter's ``POST /agents``),
and ``on_publish_settled`` records the platform's run. ``follow_up_code_change`` is governed the same way: its own
draft, its own approval, then ``publish_draft`` sends ``POST /agents/{id}/followup``.

How a run's status changes afterwards (poller and webhook) is service/code_change_status.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import anyio
from pydantic import BaseModel
from sqlmodel import Session, col, select

from incident_monitor.domain.code_change import (
    CODE_CHANGE_EVENT,
    FOLLOW_UP_EVENT,
    CodeChangeRun,
    CodeChangeStatus,
    CodeChangeSummary,
    CodeChangeView,
)
from incident_monitor.domain.enums import DraftStatus, ReceiptStatus
from incident_monitor.domain.evidence import evidence_digest, incident_evidence, sha256_hex
from incident_monitor.domain.ids import check_code_change_id, is_code_change_id
from incident_monitor.domain.models import Draft, Incident, Receipt, new_id
from incident_monitor.errors import InvalidInput, NotFound, PublishBlocked
from incident_monitor.policy.principal import Principal
from incident_monitor.policy.redaction import redact_text
from incident_monitor.service import destination_calls
from incident_monitor.service.approvals import clean_note
from incident_monitor.service.code_change_brief import render_brief
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.queries import get_incident_row
from incident_monitor.service.route_preview import decide_for_draft

MAX_REPOSITORY_CHARS = 200
MAX_INSTRUCTIONS_CHARS = 10_000
MAX_LISTED = 100
WHAT_TO_CHANGE = "what the agent should change"


class CodeChangeRequested(BaseModel):
    draft_id: str
    run_id: str
    destination_id: str
    next_step: str


class CodeChangePage(BaseModel):
    code_changes: list[CodeChangeSummary]


def run_subject(run_id: str) -> str | None:
    """The audit row's subject: the run id only when it has a code change's shape (a refusal keeps no value sent)."""
    return run_id if is_code_change_id(run_id) else None


# --- requests: drafts that publish_draft launches -----------------------------------------------------------


def _new_draft(
    monitor: Monitor, session: Session, incident: Incident, body: str, change: dict[str, Any], event: str
) -> tuple[Draft, str]:
    """A code-change draft (routing sees the incident with ``event``; the digest covers the brief) and the
    coding_agent destination it routes to; refused, naming the config to add, when there is none."""
    facts = incident_evidence(incident) | {"event": event}
    evidence = {"incident": facts, "code_change": change | {"brief_digest": "sha256:" + sha256_hex(body)}}
    now = monitor.clock()
    draft = Draft(
        draft_id=new_id("drf"),
        incident_id=incident.incident_id,
        title=f"Code change: {incident.title}"[:200],
        body=body,
        severity=incident.severity,
        source=incident.source,
        route_tags=sorted(incident.route_tags),
        evidence=evidence,
        evidence_digest=evidence_digest(evidence),
        created_at=now,
        updated_at=now,
    )
    decision = decide_for_draft(monitor, draft)
    config = monitor.config.destination(decision.destination_id) if decision.destination_id else None
    if decision.destination_id is None or config is None or config.kind != "coding_agent":
        reasons = decision.blocked_reasons or ["no coding_agent destination"]
        raise PublishBlocked("cannot request a code change: " + "; ".join(reasons), reasons=reasons)
    session.add(draft)
    return draft, decision.destination_id


def request_code_change(
    monitor: Monitor, principal: Principal, incident_id: str, repository: str, instructions: str
) -> CodeChangeRequested:
    arguments = {"incident_id": incident_id, "repository": repository, "instructions": instructions}
    with governed_call(monitor, principal, "request_code_change", arguments, subject_id=incident_id) as call:
        repository = clean_note("repository", repository, limit=MAX_REPOSITORY_CHARS, say="which, e.g. 'acme/app'")
        instructions = clean_note("instructions", instructions, limit=MAX_INSTRUCTIONS_CHARS, say=WHAT_TO_CHANGE)
        incident = get_incident_row(call.session, incident_id)
        call.run_id = incident.last_run_id
        run_id = new_id("ccr")
        brief = render_brief(call.session, incident, repository, instructions)
        change = {
            "action": "launch",
            "run_id": run_id,
            "repository": repository,
            "instructions": instructions,
            "reference": incident.incident_id,
        }
        draft, destination_id = _new_draft(monitor, call.session, incident, brief, change, CODE_CHANGE_EVENT)
        now = monitor.clock()
        call.session.add(
            CodeChangeRun(
                run_id=run_id,
                incident_id=incident.incident_id,
                destination_id=destination_id,
                repository=repository,
                draft_id=draft.draft_id,
                created_at=now,
                updated_at=now,
            )
        )
        call.notes.append(f"code change {run_id}: draft {draft.draft_id} for {destination_id}")
        return CodeChangeRequested(
            draft_id=draft.draft_id,
            run_id=run_id,
            destination_id=destination_id,
            next_step=f"call request_approval with draft_id={draft.draft_id}; once approved, publish_draft launches it",
        )


def run_row(session: Session, run_id: str) -> CodeChangeRun:
    run = session.get(CodeChangeRun, check_code_change_id(run_id))
    if run is None:
        raise NotFound(f"run_id: no code change {run_id}; call list_code_changes for the known ones")
    return run


def follow_up_code_change(
    monitor: Monitor, principal: Principal, run_id: str, instructions: str
) -> CodeChangeRequested:
    arguments = {"run_id": run_id, "instructions": instructions}
    with governed_call(monitor, principal, "follow_up_code_change", arguments, subject_id=run_subject(run_id)) as call:
        instructions = clean_note("instructions", instructions, limit=MAX_INSTRUCTIONS_CHARS, say=WHAT_TO_CHANGE)
        run = run_row(call.session, run_id)
        if run.platform_run_id is None:
            raise InvalidInput(f"run_id: code change {run_id} was never launched; approve and publish its draft first")
        if run.status is CodeChangeStatus.stopped:
            raise InvalidInput(f"run_id: code change {run_id} was stopped; call request_code_change for a new one")
        incident = get_incident_row(call.session, run.incident_id)
        body = redact_text(
            f"# Follow-up for {run.platform_run_id} (incident {incident.incident_id}: {incident.title})\n\n"
            f"Update the same pull request ({run.pr_url or 'not yet opened'}).\n\n## Instructions\n\n{instructions}\n"
        )
        change = {
            "action": "follow_up",
            "run_id": run_id,
            "platform_run_id": run.platform_run_id,
            "instructions": instructions,
            "reference": incident.incident_id,
            "sequence": run.follow_ups + 1,
        }
        draft, _ = _new_draft(monitor, call.session, incident, body, change, FOLLOW_UP_EVENT)
        call.notes.append(f"follow-up draft {draft.draft_id} for code change {run_id}")
        return CodeChangeRequested(
            draft_id=draft.draft_id,
            run_id=run_id,
            destination_id=run.destination_id,
            next_step=f"call request_approval with draft_id={draft.draft_id}; once approved, publish_draft sends it",
        )


def check_launchable(session: Session, draft: Draft) -> None:
    """Inside publishing's claim: a stopped code change launches nothing more (a pending draft of it is denied
    when it stops; this covers one approved before the stop)."""
    change = draft.evidence.get("code_change")
    run = session.get(CodeChangeRun, str(change.get("run_id"))) if isinstance(change, dict) else None
    if run is not None and run.status is CodeChangeStatus.stopped:
        raise PublishBlocked(
            f"publish blocked: code change {run.run_id} was stopped; call request_code_change for a new one",
            reasons=[f"code change {run.run_id} stopped"],
        )


def on_publish_settled(session: Session, receipt: Receipt, draft: Draft, now: datetime) -> None:
    """Inside publishing's settle: a launch or follow-up receipt updates its run (a failed publish opens its own
    self-monitoring incident there)."""
    change = draft.evidence.get("code_change")
    if not isinstance(change, dict):
        return
    run = session.get(CodeChangeRun, str(change.get("run_id")))
    if run is None:
        return
    succeeded = receipt.status is ReceiptStatus.published
    launch = change.get("action") == "launch"
    if launch:
        run.receipt_id = receipt.receipt_id
        if succeeded:
            run.platform_run_id = receipt.external_id
            run.platform_url = receipt.external_url
    elif succeeded:
        run.follow_ups += 1  # the platform updates the same PR
    if succeeded:
        # Running again (a follow-up restarts a finished run): polled at once, observations from before ignored.
        run.status, run.started_at, run.finished_at = CodeChangeStatus.running, now, None
        run.failure, run.summary_at, run.next_poll_at = None, None, now
    elif launch:
        run.status = CodeChangeStatus.failed
        run.failure = run.summary = f"launch failed: {receipt.error or 'unknown error'}"
        run.finished_at = now
    run.updated_at = now
    session.add(run)


# --- reads ---------------------------------------------------------------------------------------------------


def get_code_change(monitor: Monitor, principal: Principal, run_id: str) -> CodeChangeView:
    with governed_call(
        monitor, principal, "get_code_change", {"run_id": run_id}, subject_id=run_subject(run_id)
    ) as call:
        return CodeChangeView.model_validate(run_row(call.session, run_id), from_attributes=True)


def list_code_changes(monitor: Monitor, principal: Principal, incident_id: str | None = None) -> CodeChangePage:
    arguments = {"incident_id": incident_id}
    with governed_call(monitor, principal, "list_code_changes", arguments, subject_id=incident_id) as call:
        query = select(CodeChangeRun).order_by(col(CodeChangeRun.created_at).desc()).limit(MAX_LISTED)
        if incident_id is not None:
            query = query.where(CodeChangeRun.incident_id == incident_id)
        rows = call.session.exec(query).all()
        return CodeChangePage(code_changes=[CodeChangeSummary.model_validate(r, from_attributes=True) for r in rows])


# --- stop ------------------------------------------------------------------------------------------------------


def _decide_stop(monitor: Monitor, principal: Principal, run_id: str) -> tuple[str, str | None, bool]:
    with governed_call(
        monitor, principal, "stop_code_change", {"run_id": run_id}, subject_id=run_subject(run_id)
    ) as call:
        run = run_row(call.session, run_id)
        call.notes.append(f"stop code change {run_id} ({run.status.value})")
        return run.destination_id, run.platform_run_id, run.status.terminal


def _mark_stopped(monitor: Monitor, run_id: str) -> CodeChangeView:
    with monitor.session() as session:
        run = run_row(session, run_id)
        if not run.status.terminal:
            now = monitor.clock()
            run.status, run.finished_at, run.next_poll_at, run.updated_at = CodeChangeStatus.stopped, now, None, now
            run.summary = "Stopped by the requester"
            session.add(run)
            draft = session.get(Draft, run.draft_id)
            if draft is not None and draft.status in (DraftStatus.draft, DraftStatus.approval_required):
                draft.status = DraftStatus.denied  # nothing left to launch
                session.add(draft)
        return CodeChangeView.model_validate(run, from_attributes=True)


async def stop_code_change(monitor: Monitor, principal: Principal, run_id: str) -> CodeChangeView:
    """``POST /agents/{id}/stop`` through the publishing service (best effort; a 404 counts as stopped), then
    the run is stopped. A run never launched is stopped here only; a finished one stays as it is."""
    destination_id, platform_run_id, terminal = await anyio.to_thread.run_sync(_decide_stop, monitor, principal, run_id)
    if platform_run_id and not terminal:
        try:
            await destination_calls.stop_run(monitor, destination_id, platform_run_id)
        except destination_calls.CallFailed as exc:
            raise InvalidInput(f"stop failed: {exc}; try again (a 404 from the platform counts as stopped)") from None
    return await anyio.to_thread.run_sync(_mark_stopped, monitor, run_id)
