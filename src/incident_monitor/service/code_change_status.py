"""How a delegated code change learns its status: the poller and the signed webhook, converging on one path.

Both end in ``apply_status``, the one place a run changes: terminal states stay terminal (until an approved
follow-up restarts the run), an observation older than the run's start or than its current summary changes
nothing, ``finished`` without ``pr_url`` is a failure, and ``finished`` with one puts the PR on the receipt and
the incident. A run past ``max_run_minutes`` is failed and stopped. A failed or errored run opens a
self-monitoring incident linked to it.

Replicas: each run is polled by one replica at a time. Before polling a due run, a replica takes the run's
poll lease with a conditional UPDATE (only when no live lease is held; SQLite and PostgreSQL alike), and gives it
up with the next poll time. A replica that dies mid-poll leaves a lease that lapses; then another takes over.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anyio
from sqlalchemy import case, or_, update
from sqlmodel import Session, col, select
from standardwebhooks import Webhook, WebhookVerificationError

from incident_monitor.destinations.settings import CodingAgentConfig
from incident_monitor.domain.code_change import (
    CodeChangeRun,
    CodeChangeStatus,
    PlatformStatus,
    launch_secret,
    parse_status,
    webhook_key,
)
from incident_monitor.domain.enums import Decision
from incident_monitor.domain.models import Incident, Receipt
from incident_monitor.policy.principal import Principal
from incident_monitor.policy.redaction import redact_text
from incident_monitor.service import destination_calls, self_monitoring
from incident_monitor.service.audit_chain import append_audit
from incident_monitor.service.governed import record_decision
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.replicas import replica_id

logger = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 64_000
MAX_RUN_ID_CHARS = 100
# The lease outlives one status call (request_timeout_seconds) with room to spare, and is never under a minute.
MIN_POLL_LEASE = timedelta(seconds=60)
SYSTEM = Principal(name="system:code-change", scopes=frozenset(), kind="system")
WEBHOOK_PRINCIPAL = Principal(name="system:code-change-webhook", scopes=frozenset(), kind="system")
# The poll lease's owner when a caller names none: this process.
THIS_PROCESS = replica_id()
_RUNS = CodeChangeRun.__table__  # type: ignore[attr-defined]


# --- the one code path ---------------------------------------------------------------------------------------


def apply_status(monitor: Monitor, run_id: str, observed: PlatformStatus, observed_at: datetime, via: str) -> bool:
    """Fold one observation (poll or webhook) into the run; False when it changed nothing."""
    failure: tuple[str, str] | None = None
    with monitor.session() as session:
        # FOR UPDATE on PostgreSQL (a webhook and a poll of one run at once); SQLite's unit of work holds the lock.
        run = session.exec(select(CodeChangeRun).where(CodeChangeRun.run_id == run_id).with_for_update()).first()
        if run is None or run.status is not CodeChangeStatus.running:
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
            _audit_end(monitor, session, run, now, via)
            if run.status is not CodeChangeStatus.finished:
                failure = (run.incident_id, run.failure or run.status.value)
        run.updated_at = now
        session.add(run)
    if failure is not None:
        self_monitoring.on_code_change_failed(monitor, run_id, *failure)
    return changed


def _audit_end(monitor: Monitor, session: Session, run: CodeChangeRun, now: datetime, via: str) -> None:
    """One audit row when a run ends (finished, failed, errored), saying how we learned it."""
    append_audit(
        session,
        monitor.audit_keys,
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


def _fail_overdue(monitor: Monitor, run_id: str, limit_minutes: float) -> bool:
    """Past max_run_minutes: failed (and the caller stops it). False when the run ended meanwhile."""
    with monitor.session() as session:
        run = session.exec(select(CodeChangeRun).where(CodeChangeRun.run_id == run_id).with_for_update()).first()
        if run is None or run.status is not CodeChangeStatus.running:
            return False
        now = monitor.clock()
        run.status = CodeChangeStatus.failed
        run.failure = run.summary = f"ran longer than max_run_minutes = {limit_minutes:g}: marked failed and stopped"
        run.finished_at, run.next_poll_at, run.updated_at = now, None, now
        session.add(run)
        _audit_end(monitor, session, run, now, "time limit")
        incident_id, failure = run.incident_id, run.failure
    self_monitoring.on_code_change_failed(monitor, run_id, incident_id, failure)
    return True


# --- the poller: one replica per run, by lease ---------------------------------------------------------------


@dataclass(frozen=True)
class _Due:
    run_id: str
    destination_id: str
    platform_run_id: str
    started_at: datetime | None


def poll_lease_length(config: CodingAgentConfig) -> timedelta:
    return max(MIN_POLL_LEASE, timedelta(seconds=3 * config.request_timeout_seconds))


def _due(monitor: Monitor) -> list[_Due]:
    now = monitor.clock()
    with monitor.session() as session:
        rows = session.exec(
            select(CodeChangeRun).where(
                CodeChangeRun.status == CodeChangeStatus.running,
                col(CodeChangeRun.next_poll_at) <= now,
                or_(col(CodeChangeRun.poll_lease_until).is_(None), col(CodeChangeRun.poll_lease_until) < now),
            )
        ).all()
        return [_Due(r.run_id, r.destination_id, r.platform_run_id or "", r.started_at) for r in rows]


def claim_poll(monitor: Monitor, run_id: str, owner: str, lease: timedelta) -> bool:
    """Take the run's poll lease for ``owner`` if it is due and no live lease is held; False when another has it.

    One conditional UPDATE: of replicas racing for the run, exactly one sees a row changed."""
    now = monitor.clock()
    with monitor.session() as session:
        taken = session.connection().execute(
            update(_RUNS)
            .where(
                _RUNS.c.run_id == run_id,
                _RUNS.c.status == CodeChangeStatus.running.value,
                _RUNS.c.next_poll_at <= now,
                or_(_RUNS.c.poll_lease_until.is_(None), _RUNS.c.poll_lease_until < now),
            )
            .values(poll_owner=owner, poll_lease_until=now + lease)
        )
        return bool(taken.rowcount)


def release_poll(monitor: Monitor, run_id: str, owner: str, interval_seconds: float) -> None:
    """Give the lease up with the next poll time (none once the run ended); a no-op if the lease was lost."""
    next_poll = monitor.clock() + timedelta(seconds=interval_seconds)
    with monitor.session() as session:
        session.connection().execute(
            update(_RUNS)
            .where(_RUNS.c.run_id == run_id, _RUNS.c.poll_owner == owner)
            .values(
                poll_owner=None,
                poll_lease_until=None,
                next_poll_at=case((_RUNS.c.status == CodeChangeStatus.running.value, next_poll), else_=None),
            )
        )


async def poll_due(monitor: Monitor, *, owner: str = THIS_PROCESS) -> list[str]:
    """One poller pass: each due run this replica leases gets ``GET /agents/{id}`` (or the time limit)."""
    polled: list[str] = []
    for due in await anyio.to_thread.run_sync(_due, monitor):
        config = monitor.config.destination(due.destination_id)
        if not isinstance(config, CodingAgentConfig):
            continue  # its destination left the config: nothing to poll it with
        if not await anyio.to_thread.run_sync(claim_poll, monitor, due.run_id, owner, poll_lease_length(config)):
            continue  # another replica polls it
        try:
            await _poll_one(monitor, due, config)
        finally:
            await anyio.to_thread.run_sync(release_poll, monitor, due.run_id, owner, config.poll_interval_seconds)
        polled.append(due.run_id)
    return polled


async def _poll_one(monitor: Monitor, due: _Due, config: CodingAgentConfig) -> None:
    now = monitor.clock()
    if due.started_at is not None and now - due.started_at > timedelta(minutes=config.max_run_minutes):
        if await anyio.to_thread.run_sync(_fail_overdue, monitor, due.run_id, config.max_run_minutes):
            try:
                await destination_calls.stop_run(monitor, due.destination_id, due.platform_run_id)
            except destination_calls.CallFailed as exc:
                logger.warning("code change %s: could not stop it after the time limit: %s", due.run_id, exc)
        return
    try:
        observed = await destination_calls.run_status(monitor, due.destination_id, due.platform_run_id)
    except destination_calls.CallFailed as exc:
        logger.warning("code change %s: poll failed: %s", due.run_id, exc)
        return
    await anyio.to_thread.run_sync(apply_status, monitor, due.run_id, observed, now, "poll")


# --- the webhook ---------------------------------------------------------------------------------------------


def receive_webhook(monitor: Monitor, run_id: str, headers: dict[str, str], body: bytes) -> int:
    """The status callback: 401 for a bad signature (audited), else 200 (also for runs we no longer track)."""
    if len(body) > MAX_WEBHOOK_BYTES:
        return 413
    if len(run_id) > MAX_RUN_ID_CHARS:
        return 404
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
    # Standard Webhooks' verify refused a timestamp outside its tolerance, so this is the sender's recent clock.
    observed_at = datetime.fromtimestamp(int(stamp), UTC) if stamp.isdigit() else monitor.clock()
    apply_status(monitor, run_id, observed, observed_at, "webhook")
    return 200
