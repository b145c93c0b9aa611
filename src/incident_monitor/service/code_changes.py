"""Code changes delegated to a coding-agent platform (issue 15, seed 002).

``request_code_change`` renders the brief and stores it as a draft (event ``code_change.requested``) that routing
sends only to a ``coding_agent`` destination and that always needs an approval bound to its digest; the launch is
``publish_draft`` of that draft (the adapter's ``POST /agents``), and ``on_publish_settled`` records its run.
``follow_up_code_change`` is governed the same way (its own draft and approval).

Status arrives from both directions — the poller (``poll_due``) and the signed webhook (``receive_webhook``) — and
both end in ``apply_status``, the one place a run changes: terminal states stay terminal (until an approved
follow-up restarts the run), an observation older than the run's start or its current summary changes nothing,
``finished`` without ``pr_url`` is a failure, and a run past ``max_run_minutes`` is failed and stopped.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, col, select
from standardwebhooks import Webhook, WebhookVerificationError

from incident_monitor.destinations.settings import CodingAgentConfig
from incident_monitor.domain.code_change import (
    CODE_CHANGE_EVENT,
    FOLLOW_UP_EVENT,
    CodeChangeRun,
    CodeChangeStatus,
    CodeChangeView,
    PlatformStatus,
    launch_secret,
    parse_status,
    webhook_key,
)
from incident_monitor.domain.enums import Decision, DraftStatus
from incident_monitor.domain.evidence import evidence_digest, incident_evidence, sha256_hex
from incident_monitor.domain.models import Draft, Incident, Receipt, TriageRun, new_id
from incident_monitor.errors import InvalidInput, NotFound, PublishBlocked
from incident_monitor.policy.principal import Principal
from incident_monitor.policy.redaction import redact_text
from incident_monitor.service import self_monitoring
from incident_monitor.service.audit_chain import append_audit
from incident_monitor.service.governed import governed_call, record_decision
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.queries import get_incident_row, recent_occurrences, run_timeline
from incident_monitor.service.route_preview import decide_for_draft

logger = logging.getLogger(__name__)

MAX_BRIEF_CHARS = 30_000
MAX_INSTRUCTIONS_CHARS = 10_000
MAX_WEBHOOK_BYTES = 64_000
SYSTEM = Principal(name="system:code-change", scopes=frozenset(), kind="system")
WEBHOOK_PRINCIPAL = Principal(name="system:code-change-webhook", scopes=frozenset(), kind="system")
_ACTIVE = (CodeChangeStatus.running,)


class CodeChangeRequested(BaseModel):
    draft_id: str
    run_id: str
    destination_id: str
    next_step: str


class CodeChangePage(BaseModel):
    code_changes: list[CodeChangeView]


# --- the brief --------------------------------------------------------------------------------------------


def render_brief(session: Session, incident: Incident, repository: str, instructions: str) -> str:
    """Self-contained markdown an agent with no other context can act on; redacted, at most 30,000 chars."""
    parts = [
        f"# Code change for incident {incident.incident_id}: {incident.title}",
        "",
        f"- Reference: `{incident.incident_id}` (severity {incident.severity.value}, status {incident.status.value})",
        f"- Repository: `{repository}`",
        f"- Source / event: {incident.source} / {incident.event}",
        "",
        "## Instructions",
        "",
        instructions,
        "",
        "## What we expect of the pull request",
        "",
        "- Open a draft pull request on the repository above with a focused fix and a test that fails without it.",
        "- Explain in the PR description what you changed, why, and any choice you made where the brief was "
        "ambiguous (there is no way to ask the responder mid-run).",
        "- Report `finished` with the PR URL only once the PR exists; report `running` until then.",
        "",
        "## Investigation snapshot",
        "",
        "### Incident detail",
        "",
        incident.detail or "(none)",
    ]
    if incident.evidence_refs:
        parts += ["", "### Evidence", ""] + [f"- {ref}" for ref in incident.evidence_refs[:50]]
    triage = session.exec(
        select(TriageRun)
        .where(TriageRun.incident_id == incident.incident_id)
        .order_by(col(TriageRun.created_at).desc())
        .limit(1)
    ).first()
    if triage is not None:
        parts += ["", "### Triage findings", "", triage.evidence_summary] + [f"- {f}" for f in triage.findings[:50]]
    occurrences = recent_occurrences(session, incident.incident_id)
    parts += ["", f"### Occurrences ({incident.occurrence_count} in all; latest first)", ""]
    parts += [f"- {o.seen_at.isoformat()} by {o.reported_by}" for o in occurrences[:20]]
    timeline = run_timeline(session, incident.last_run_id)
    if timeline:
        parts += ["", f"### Run timeline ({incident.last_run_id})", ""]
        parts += [f"- {e.at.isoformat()} {e.principal} {e.action}: {e.decision.value}" for e in timeline[-50:]]
    brief = redact_text("\n".join(parts) + "\n")
    if len(brief) > MAX_BRIEF_CHARS:
        marker = "\n\n[snapshot truncated at 30,000 characters]\n"
        brief = brief[: MAX_BRIEF_CHARS - len(marker)] + marker
    return brief


def _agent_config(monitor: Monitor, destination_id: str | None) -> CodingAgentConfig | None:
    config = monitor.config.destination(destination_id) if destination_id else None
    return config if isinstance(config, CodingAgentConfig) else None


def _clean(field: str, value: str, limit: int) -> str:
    value = value.strip()
    if not value:
        raise InvalidInput(f"{field}: must not be empty; say what the agent should change")
    if len(value) > limit:
        raise InvalidInput(f"{field}: at most {limit} characters (got {len(value)}); shorten it")
    return redact_text(value)


def _new_draft(
    monitor: Monitor, session: Session, incident: Incident, body: str, change: dict[str, Any], event: str
) -> Draft:
    """A code-change draft: routing sees the incident with ``event``; the digest covers the brief."""
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
    session.add(draft)
    decision = decide_for_draft(monitor, draft)
    if decision.destination_id is None or _agent_config(monitor, decision.destination_id) is None:
        raise PublishBlocked(
            "no coding_agent destination to launch on: add [[destinations]] with kind = 'coding_agent', base_url "
            "and token = 'env:NAME' to the config (or a route to one when several are configured)",
            reasons=decision.blocked_reasons or ["no coding_agent destination"],
        )
    return draft


def request_code_change(
    monitor: Monitor, principal: Principal, incident_id: str, repository: str, instructions: str
) -> CodeChangeRequested:
    arguments = {"incident_id": incident_id, "repository": repository, "instructions": instructions}
    with governed_call(monitor, principal, "request_code_change", arguments, subject_id=incident_id) as call:
        repository = _clean("repository", repository, 200)
        instructions = _clean("instructions", instructions, MAX_INSTRUCTIONS_CHARS)
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
        draft = _new_draft(monitor, call.session, incident, brief, change, CODE_CHANGE_EVENT)
        destination_id = decide_for_draft(monitor, draft).destination_id
        assert destination_id is not None
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


def _run_row(session: Session, run_id: str) -> CodeChangeRun:
    run = session.get(CodeChangeRun, run_id)
    if run is None:
        raise NotFound(f"code change {run_id!r} not found; list_code_changes shows the known ones")
    return run


def follow_up_code_change(
    monitor: Monitor, principal: Principal, run_id: str, instructions: str
) -> CodeChangeRequested:
    arguments = {"run_id": run_id, "instructions": instructions}
    with governed_call(monitor, principal, "follow_up_code_change", arguments, subject_id=run_id) as call:
        instructions = _clean("instructions", instructions, MAX_INSTRUCTIONS_CHARS)
        run = _run_row(call.session, run_id)
        if run.platform_run_id is None:
            raise InvalidInput(f"code change {run_id} was never launched: approve and publish its draft first")
        if run.status is CodeChangeStatus.stopped:
            raise InvalidInput(f"code change {run_id} was stopped; request a new code change instead")
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
        draft = _new_draft(monitor, call.session, incident, body, change, FOLLOW_UP_EVENT)
        call.notes.append(f"follow-up draft {draft.draft_id} for code change {run_id}")
        return CodeChangeRequested(
            draft_id=draft.draft_id,
            run_id=run_id,
            destination_id=run.destination_id,
            next_step=f"call request_approval with draft_id={draft.draft_id}; once approved, publish_draft sends it",
        )


# --- after publish_draft --------------------------------------------------------------------------------


def on_publish_settled(session: Session, receipt: Receipt, draft: Draft, now: datetime) -> str | None:
    """Inside publishing's settle: a launch or follow-up receipt updates its run. Returns a failure to report."""
    change = draft.evidence.get("code_change")
    if not isinstance(change, dict):
        return None
    run = session.get(CodeChangeRun, str(change.get("run_id")))
    if run is None:
        return None
    succeeded = receipt.status.value == "published"
    if change.get("action") == "launch":
        run.receipt_id = receipt.receipt_id
        if succeeded:
            run.platform_run_id = receipt.external_id
            run.platform_url = receipt.external_url
    elif succeeded:
        run.follow_ups += 1
        run.pr_url = run.pr_url  # the same PR is updated
    if succeeded:
        run.status = CodeChangeStatus.running
        run.started_at = now
        run.finished_at = None
        run.failure = None
        run.summary_at = None
        run.next_poll_at = now
    elif change.get("action") == "launch":
        run.status = CodeChangeStatus.failed
        run.failure = run.summary = f"launch failed: {receipt.error or 'unknown error'}"
        run.finished_at = now
    run.updated_at = now
    session.add(run)
    return None  # a failed publish already opens its own self-monitoring incident


# --- status: the one code path ---------------------------------------------------------------------------


def apply_status(monitor: Monitor, run_id: str, observed: PlatformStatus, observed_at: datetime, via: str) -> bool:
    """Fold one observation (poll or webhook) into the run; False when it changed nothing."""
    failure: tuple[str, str] | None = None
    with monitor.session() as session:
        run = session.get(CodeChangeRun, run_id)
        if run is None or run.status not in _ACTIVE:
            return False  # unknown, not launched, or terminal: terminal stays terminal
        if run.started_at is not None and observed_at < run.started_at:
            return False  # older than the launch or follow-up it would describe
        now = monitor.clock()
        changed = False
        if run.summary_at is None or observed_at >= run.summary_at:
            summary = redact_text(observed.summary)
            changed = summary != run.summary
            run.summary, run.summary_at = summary, observed_at
        if observed.status == "finished" and observed.pr_url:
            run.status, run.pr_url = CodeChangeStatus.finished, observed.pr_url
            run.branch = observed.branch or run.branch
            _attach_pr(session, run, observed.pr_url, now)
        elif observed.status == "finished":
            run.status = CodeChangeStatus.failed
            run.failure = "the platform reported finished without a pr_url (a failure, not 'almost done')"
        elif observed.status == "error":
            run.status = CodeChangeStatus.error
            run.failure = "the platform reported error: " + (run.summary or "(no summary)")
        if run.status.terminal:
            run.finished_at, run.next_poll_at, changed = now, None, True
            if run.failure and run.status is CodeChangeStatus.failed:
                run.summary = redact_text(run.failure)
            _audit_end(session, run, now, via)
            if run.status is not CodeChangeStatus.finished:
                failure = (run.incident_id, run.failure or run.status.value)
        run.updated_at = now
        session.add(run)
    if failure is not None:
        self_monitoring.on_code_change_failed(monitor, run_id, *failure)
    return changed


def _audit_end(session: Session, run: CodeChangeRun, now: datetime, via: str) -> None:
    """One audit row when a run ends (finished, failed, errored), saying how we learned it."""
    append_audit(
        session,
        at=now,
        principal=SYSTEM.name,
        action="code_change.status",
        decision=Decision.allow if run.status is CodeChangeStatus.finished else Decision.error,
        reasons=[f"code change {run.run_id} {run.status.value} (via {via})"] + ([run.failure] if run.failure else []),
        arguments={"run_id": run.run_id},
        subject_id=run.incident_id,
    )


def _attach_pr(session: Session, run: CodeChangeRun, pr_url: str, now: datetime) -> None:
    """The PR lands on the launch receipt (external URL) and on the incident (an evidence reference)."""
    receipt = session.get(Receipt, run.receipt_id) if run.receipt_id else None
    if receipt is not None:
        receipt.external_url = pr_url
        receipt.updated_at = now
        session.add(receipt)
    incident = session.get(Incident, run.incident_id)
    if incident is not None:
        ref = f"pull_request:{pr_url}"
        if ref not in incident.evidence_refs:
            incident.evidence_refs = [*incident.evidence_refs, ref]
            session.add(incident)


def _fail_overdue(monitor: Monitor, run_id: str, limit_minutes: float) -> None:
    with monitor.session() as session:
        run = session.get(CodeChangeRun, run_id)
        if run is None or run.status not in _ACTIVE:
            return
        now = monitor.clock()
        run.status = CodeChangeStatus.failed
        run.failure = f"ran longer than max_run_minutes = {limit_minutes:g}: marked failed and stopped"
        run.summary = run.failure
        run.finished_at, run.next_poll_at, run.updated_at = now, None, now
        session.add(run)
        _audit_end(session, run, now, "time limit")
        incident_id, failure = run.incident_id, run.failure
    self_monitoring.on_code_change_failed(monitor, run_id, incident_id, failure)


def _due(monitor: Monitor) -> list[tuple[str, str, str, datetime | None]]:
    now = monitor.clock()
    with monitor.session() as session:
        rows = session.exec(
            select(CodeChangeRun).where(col(CodeChangeRun.status).in_(_ACTIVE), col(CodeChangeRun.next_poll_at) <= now)
        ).all()
        return [(r.run_id, r.destination_id, r.platform_run_id or "", r.started_at) for r in rows]


def _schedule(monitor: Monitor, run_id: str, interval: float) -> None:
    with monitor.session() as session:
        run = session.get(CodeChangeRun, run_id)
        if run is not None and run.status in _ACTIVE:
            run.next_poll_at = monitor.clock() + timedelta(seconds=interval)
            session.add(run)


async def poll_due(monitor: Monitor) -> list[str]:
    """One poller pass: every active run whose poll is due gets ``GET /agents/{id}`` (or the time limit)."""
    import anyio

    polled: list[str] = []
    for run_id, destination_id, platform_run_id, started_at in await anyio.to_thread.run_sync(_due, monitor):
        config = _agent_config(monitor, destination_id)
        adapter: Any = monitor.destinations.get(destination_id)
        if config is None or adapter is None:
            continue
        now = monitor.clock()
        if started_at is not None and now - started_at > timedelta(minutes=config.max_run_minutes):
            await anyio.to_thread.run_sync(_fail_overdue, monitor, run_id, config.max_run_minutes)
            await _stop_quietly(adapter, platform_run_id)
            polled.append(run_id)
            continue
        from incident_monitor.destinations.coding_agent import CallFailed

        try:
            observed = await adapter.run_status(platform_run_id)
        except CallFailed as exc:
            logger.warning("code change %s: poll failed: %s", run_id, exc)
        else:
            await anyio.to_thread.run_sync(apply_status, monitor, run_id, observed, now, "poll")
        await anyio.to_thread.run_sync(_schedule, monitor, run_id, config.poll_interval_seconds)
        polled.append(run_id)
    return polled


async def _stop_quietly(adapter: Any, platform_run_id: str) -> None:
    from incident_monitor.destinations.coding_agent import CallFailed

    try:
        await adapter.stop(platform_run_id)
    except CallFailed as exc:
        logger.warning("could not stop %s: %s", platform_run_id, exc)


# --- the webhook --------------------------------------------------------------------------------------------


def receive_webhook(monitor: Monitor, run_id: str, headers: dict[str, str], body: bytes) -> int:
    """The status callback: 401 for a bad signature (audited), else 200 (also for runs we no longer track)."""
    if len(run_id) > 100 or len(body) > MAX_WEBHOOK_BYTES:
        return 413 if len(body) > MAX_WEBHOOK_BYTES else 404
    try:
        Webhook(launch_secret(webhook_key(monitor.data_dir), run_id)).verify(body, headers)
    except WebhookVerificationError as exc:
        record_decision(
            monitor,
            WEBHOOK_PRINCIPAL,
            "code_change_webhook",
            Decision.deny,
            [f"bad webhook signature for code change {run_id}: {exc}"[:300]],
            {"run_id": run_id},
            subject_id=run_id,
        )
        return 401
    observed = parse_status(body)
    if observed is None:
        return 400
    stamp = headers.get("webhook-timestamp", "")
    observed_at = datetime.fromtimestamp(int(stamp), UTC) if stamp.isdigit() else monitor.clock()
    apply_status(monitor, run_id, observed, observed_at, "webhook")
    return 200


# --- reads and stop ---------------------------------------------------------------------------------------


def _view(run: CodeChangeRun) -> CodeChangeView:
    return CodeChangeView.model_validate(run, from_attributes=True)


def get_code_change(monitor: Monitor, principal: Principal, run_id: str) -> CodeChangeView:
    with governed_call(monitor, principal, "get_code_change", {"run_id": run_id}, subject_id=run_id) as call:
        return _view(_run_row(call.session, run_id))


def list_code_changes(monitor: Monitor, principal: Principal, incident_id: str | None = None) -> CodeChangePage:
    arguments = {"incident_id": incident_id}
    with governed_call(monitor, principal, "list_code_changes", arguments, subject_id=incident_id) as call:
        query = select(CodeChangeRun).order_by(col(CodeChangeRun.created_at).desc()).limit(100)
        if incident_id is not None:
            query = query.where(CodeChangeRun.incident_id == incident_id)
        return CodeChangePage(code_changes=[_view(r) for r in call.session.exec(query).all()])


def _claim_stop(monitor: Monitor, principal: Principal, run_id: str) -> tuple[str, str | None, bool]:
    with governed_call(monitor, principal, "stop_code_change", {"run_id": run_id}, subject_id=run_id) as call:
        run = _run_row(call.session, run_id)
        call.notes.append(f"stop code change {run_id} ({run.status.value})")
        return run.destination_id, run.platform_run_id, run.status.terminal


def _mark_stopped(monitor: Monitor, run_id: str) -> CodeChangeView:
    with monitor.session() as session:
        run = _run_row(session, run_id)
        if not run.status.terminal:
            now = monitor.clock()
            run.status, run.finished_at, run.next_poll_at, run.updated_at = CodeChangeStatus.stopped, now, None, now
            run.summary = "Stopped by the requester"
            session.add(run)
            draft = session.get(Draft, run.draft_id)
            if draft is not None and draft.status in (DraftStatus.draft, DraftStatus.approval_required):
                draft.status = DraftStatus.denied  # nothing left to launch
                session.add(draft)
        return _view(run)


async def stop_code_change(monitor: Monitor, principal: Principal, run_id: str) -> CodeChangeView:
    """``POST /agents/{id}/stop`` (best effort; a 404 counts as stopped), then the run is stopped."""
    import anyio

    from incident_monitor.destinations.coding_agent import CallFailed

    destination_id, platform_run_id, terminal = await anyio.to_thread.run_sync(_claim_stop, monitor, principal, run_id)
    adapter: Any = monitor.destinations.get(destination_id)
    if platform_run_id and not terminal and adapter is not None:
        try:
            await adapter.stop(platform_run_id)
        except CallFailed as exc:
            raise InvalidInput(f"stop failed: {exc}; try again (a 404 from the platform counts as stopped)") from None
    return await anyio.to_thread.run_sync(_mark_stopped, monitor, run_id)


# --- connection test ----------------------------------------------------------------------------------------


class PingResult(BaseModel):
    destination_id: str
    ok: bool
    detail: str


async def ping_destination(monitor: Monitor, principal: Principal, destination_id: str) -> PingResult:
    """``GET /ping`` on a coding-agent destination ("Test connection"), saying what failed."""
    import anyio

    from incident_monitor.destinations.coding_agent import CallFailed

    def check() -> None:
        with governed_call(monitor, principal, "ping_destination", {"destination_id": destination_id}):
            if _agent_config(monitor, destination_id) is None:
                raise InvalidInput(
                    f"destination_id: '{destination_id}' is not a configured coding_agent destination "
                    "(ping supports coding_agent destinations)"
                )

    await anyio.to_thread.run_sync(check)
    adapter: Any = monitor.destinations[destination_id]
    try:
        await adapter.ping()
    except CallFailed as exc:
        return PingResult(destination_id=destination_id, ok=False, detail=str(exc))
    return PingResult(destination_id=destination_id, ok=True, detail="GET /ping answered 200: reachable, token valid")
