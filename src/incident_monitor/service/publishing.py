"""Publishing: the only path from a draft to a destination adapter.

An outbox in three steps:
1. ``claim``: every gate (scope, draft state, route, readiness, approval binding) and then a
   ``pending`` receipt carrying the idempotency key, committed together with the audit row.
2. deliver: the adapter is called with a permit minted for exactly that receipt.
3. ``settle``: the outcome updates the receipt, draft and incident.
A crash between 1 and 3 leaves a ``pending`` receipt; ``recover_pending`` finishes it through the
same idempotent adapter call. Publishing an already published draft returns its receipt.

Across processes (a server and a CLI on one SQLite file, or replicas on PostgreSQL): a unit of work holds
the database's write lock, so exactly one claim moves a draft to ``publishing``; every other publish of it
returns that receipt without delivering. The claim carries a lease (``claimed_by``, ``lease_expires_at``),
renewed while the adapter call runs; the ``recovery_loop`` every server runs takes over only pending
receipts whose claimant is gone: its lease lapsed, or it was a process of this host that no longer runs
(service/replicas.py). A server starting while another's publish is in flight leaves it alone. The
take-over is a conditional update only one process can win, and it finishes the receipt through the same
idempotent adapter call. The first outcome settled wins: a late one from a claimant that came back is not
written over it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol, TypeVar

import anyio
from sqlalchemy import update
from sqlmodel import Session, col, select

from incident_monitor.destinations.base import PublishOutcome, PublishRequest
from incident_monitor.domain.destination_state import read_disabled
from incident_monitor.domain.enums import ApprovalStatus, Decision, DraftStatus, IncidentStatus, ReceiptStatus
from incident_monitor.domain.evidence import sha256_hex
from incident_monitor.domain.io import PublishResult
from incident_monitor.domain.models import ApprovalRequest, Draft, Incident, Receipt, ReceiptBase, new_id
from incident_monitor.domain.transitions import check_draft_transition, check_incident_transition
from incident_monitor.errors import ApprovalRequired, MonitorError, PublishBlocked
from incident_monitor.policy.permit import PublishPermit, issue_permit
from incident_monitor.policy.principal import Principal
from incident_monitor.policy.route_decision import RouteDecision
from incident_monitor.service import code_changes, self_monitoring
from incident_monitor.service.approvals import approvals_for, is_expired
from incident_monitor.service.audit_chain import append_audit
from incident_monitor.service.destination_health import disable_destination, record_delivery
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.queries import draft_next_step, get_draft_row, run_id_for_draft
from incident_monitor.service.replicas import PROCESS_REPLICA, is_gone
from incident_monitor.service.route_preview import decide_for_draft

logger = logging.getLogger(__name__)
T = TypeVar("T")

RECOVERY_PRINCIPAL = Principal(name="system:recovery", scopes=frozenset(), kind="system")
DONE = frozenset({ReceiptStatus.published, ReceiptStatus.commented})


def _lease_until(monitor: Monitor, now: datetime) -> datetime:
    return now + timedelta(seconds=monitor.config.store.publish_lease_seconds)


def idempotency_key(draft_id: str, destination_id: str, evidence_digest: str) -> str:
    return "idem_" + sha256_hex([draft_id, destination_id, evidence_digest])[:32]


@dataclass(frozen=True)
class Claim:
    receipt_id: str
    request: PublishRequest | None  # None: nothing to send (already published, or in flight elsewhere)
    permit: PublishPermit | None


def _approval_gate(
    session: Session, monitor: Monitor, draft: Draft, decision: RouteDecision, key: str
) -> ApprovalRequest | None:
    """The approval that authorises this publish, or ApprovalRequired saying what to do."""
    if draft.status is DraftStatus.denied:
        raise ApprovalRequired(
            f"approval denied for draft {draft.draft_id}: {draft_next_step(draft, triaged=True)}",
            reasons=["approval denied"],
        )
    if not decision.approval_required:
        return None
    now = monitor.clock()
    candidates = approvals_for(session, draft.draft_id, ApprovalStatus.approved, ApprovalStatus.used)
    problems: list[str] = []
    for approval in candidates:
        if approval.status is ApprovalStatus.used:
            used_receipt = session.get(Receipt, approval.used_by_receipt_id) if approval.used_by_receipt_id else None
            if used_receipt is None or used_receipt.idempotency_key != key:
                problems.append(f"approval {approval.approval_id} was already used for another publish")
                continue
        if approval.evidence_digest != draft.evidence_digest:
            problems.append(
                f"evidence changed since approval {approval.approval_id} "
                f"(approved {approval.evidence_digest}, now {draft.evidence_digest})"
            )
        elif approval.destination_id != decision.destination_id or approval.route_id != decision.route_id:
            problems.append(f"route changed since approval {approval.approval_id} (now {decision.destination_id})")
        elif approval.policy_version != decision.policy_version:
            problems.append(f"policy changed since approval {approval.approval_id}")
        elif approval.status is ApprovalStatus.approved and is_expired(approval, now):
            problems.append(f"approval {approval.approval_id} expired at {approval.expires_at.isoformat()}")
        else:
            return approval
    pending = approvals_for(session, draft.draft_id, ApprovalStatus.pending)
    if pending and not problems:
        raise ApprovalRequired(
            f"approval pending: approval_id={pending[0].approval_id} awaits an operator's decision; "
            "wait, then call publish_draft again",
            reasons=["approval pending"],
        )
    why = "; ".join(problems) if problems else "; ".join(decision.approval_reasons)
    raise ApprovalRequired(
        f"approval required ({why}): call request_approval with draft_id={draft.draft_id} and a reason",
        reasons=problems or decision.approval_reasons,
    )


def _use_approval(session: Session, approval: ApprovalRequest, receipt_id: str, now: datetime) -> None:
    """Mark the approval used by this receipt: a conditional update, so it is used once whatever else runs."""
    used = session.exec(
        update(ApprovalRequest)
        .where(col(ApprovalRequest.approval_id) == approval.approval_id)
        .where(col(ApprovalRequest.status) == ApprovalStatus.approved)
        .values(status=ApprovalStatus.used, used_at=now, used_by_receipt_id=receipt_id)
        .execution_options(synchronize_session=False)
    )
    if used.rowcount != 1:
        raise ApprovalRequired(
            f"approval {approval.approval_id} was already used for another publish; "
            f"call request_approval with draft_id={approval.draft_id} and a reason",
            reasons=[f"approval {approval.approval_id} already used"],
        )
    session.refresh(approval)


def _request_for(receipt: Receipt, draft: Draft, labels: list[str]) -> PublishRequest:
    return PublishRequest(
        receipt_id=receipt.receipt_id,
        idempotency_key=receipt.idempotency_key,
        draft_id=draft.draft_id,
        incident_id=draft.incident_id,
        destination_id=receipt.destination_id,
        route_id=receipt.route_id,
        title=draft.title,
        body=draft.body,
        severity=draft.severity.value,
        labels=labels,
        fingerprint=draft.evidence["incident"]["fingerprint"],
        evidence=draft.evidence,
        evidence_digest=draft.evidence_digest,
        attempt=receipt.attempt_count + 1,
    )


def _labels(monitor: Monitor, draft: Draft, route_id: str | None) -> list[str]:
    route = next((r for r in monitor.config.routes if r.id == route_id), None)
    return sorted({f"severity:{draft.severity.value}", *draft.route_tags, *(route.labels if route else [])})


def _permit_for(receipt: Receipt) -> PublishPermit:
    return issue_permit(
        receipt_id=receipt.receipt_id,
        destination_id=receipt.destination_id,
        evidence_digest=receipt.evidence_digest,
        idempotency_key=receipt.idempotency_key,
    )


def claim(monitor: Monitor, principal: Principal, draft_id: str) -> Claim:
    """Step 1: all gates, then a committed pending receipt and a permit (or the finished receipt)."""
    with governed_call(monitor, principal, "publish_draft", {"draft_id": draft_id}, subject_id=draft_id) as call:
        session = call.session
        draft = get_draft_row(session, draft_id)
        call.run_id = run_id_for_draft(session, draft)
        if draft.status in (DraftStatus.published, DraftStatus.publishing):
            latest = session.exec(
                select(Receipt)
                .where(
                    Receipt.draft_id == draft_id,
                    Receipt.evidence_digest == draft.evidence_digest,
                    # A blocked attempt is a refusal on record, never the publish itself.
                    Receipt.status != ReceiptStatus.blocked,
                )
                .order_by(col(Receipt.created_at).desc())
            ).first()
            if latest is not None:
                call.notes.append(f"draft already {draft.status.value}: receipt {latest.receipt_id} returned")
                return Claim(latest.receipt_id, None, None)
        decision = decide_for_draft(monitor, draft)
        if decision.blocked:
            raise PublishBlocked(
                "publish blocked: "
                + "; ".join(decision.blocked_reasons)
                + ". Use preview_route for details; do not publish through another surface.",
                reasons=decision.blocked_reasons,
            )
        assert decision.destination_id is not None and decision.destination_kind is not None
        if decision.destination_kind == "coding_agent":
            code_changes.check_launchable(session, draft)
        key = idempotency_key(draft.draft_id, decision.destination_id, draft.evidence_digest)
        approval = _approval_gate(session, monitor, draft, decision, key)
        check_draft_transition(draft.draft_id, draft.status, DraftStatus.publishing)

        now = monitor.clock()
        receipt = session.exec(select(Receipt).where(Receipt.idempotency_key == key)).first()
        if receipt is None:
            receipt = Receipt(
                receipt_id=new_id("rcp"),
                draft_id=draft.draft_id,
                incident_id=draft.incident_id,
                destination_id=decision.destination_id,
                destination_kind=decision.destination_kind,
                route_id=decision.route_id,
                match_reason=decision.match_reason,
                evidence_digest=draft.evidence_digest,
                idempotency_key=key,
                approval_id=approval.approval_id if approval else None,
                published_by=principal.name,
                created_at=now,
                updated_at=now,
            )
        receipt.status = ReceiptStatus.pending
        receipt.updated_at = now
        receipt.claimed_by = PROCESS_REPLICA
        receipt.lease_expires_at = _lease_until(monitor, now)
        session.add(receipt)
        session.flush()
        if approval is not None and approval.status is ApprovalStatus.approved:
            _use_approval(session, approval, receipt.receipt_id, now)
        draft.status = DraftStatus.publishing
        draft.updated_at = now
        session.add(draft)
        call.notes.append(f"receipt {receipt.receipt_id} pending for {receipt.destination_id}")
        request = _request_for(receipt, draft, _labels(monitor, draft, decision.route_id))
        return Claim(receipt.receipt_id, request, _permit_for(receipt))


async def deliver(monitor: Monitor, request: PublishRequest, permit: PublishPermit) -> PublishOutcome:
    """Step 2: the adapter call. Never raises for a delivery failure."""
    adapter = monitor.destinations[request.destination_id]
    try:
        return await adapter.publish(request, permit)
    except Exception as exc:  # an adapter bug must still end in a receipt
        logger.exception("adapter %s crashed", request.destination_id)
        return PublishOutcome(status="failed", attempts=1, error=f"adapter error: {type(exc).__name__}")


def settle(monitor: Monitor, principal: Principal, receipt_id: str, outcome: PublishOutcome) -> None:
    """Step 3: record the outcome on the receipt, the draft and the incident."""
    with monitor.session() as session:
        now = monitor.clock()
        receipt = session.get(Receipt, receipt_id)
        assert receipt is not None
        if receipt.status is not ReceiptStatus.pending:
            # Settled already (another replica's recovery finished it while this delivery ran late): the
            # first outcome stands; the adapter call was idempotent, so there is still one external effect.
            logger.info("receipt %s already %s; a late outcome is not recorded", receipt_id, receipt.status.value)
            return
        draft = session.get(Draft, receipt.draft_id)
        assert draft is not None
        receipt.status = ReceiptStatus(outcome.status)
        receipt.lease_expires_at = None
        receipt.external_id = outcome.external_id
        receipt.external_url = outcome.external_url
        receipt.attempt_count += outcome.attempts
        receipt.error = outcome.error
        receipt.response_excerpt = outcome.response_excerpt
        receipt.updated_at = now
        session.add(receipt)
        succeeded = receipt.status in DONE
        target = DraftStatus.published if succeeded else DraftStatus.publish_failed
        if draft.status is DraftStatus.publishing:
            draft.status = target
            draft.updated_at = now
            session.add(draft)
        if outcome.disable_reason:
            disable_destination(session, receipt.destination_id, outcome.disable_reason, now)
        # Kept per destination (not only on the receipt) so status can say a destination keeps failing.
        record_delivery(
            session, receipt.destination_id, error=None if succeeded else (receipt.error or "failed"), at=now
        )
        if receipt.destination_kind == "coding_agent":
            code_changes.on_publish_settled(session, receipt, draft, now)
        incident = session.get(Incident, receipt.incident_id)
        if succeeded and incident is not None and incident.status in (IncidentStatus.open, IncidentStatus.triaged):
            check_incident_transition(incident.incident_id, incident.status, IncidentStatus.published)
            incident.status = IncidentStatus.published
            session.add(incident)
        append_audit(
            session,
            monitor.audit_keys,
            at=now,
            principal=principal.name,
            action="publish_draft.outcome",
            decision=Decision.allow if succeeded else Decision.error,
            reasons=[f"receipt {receipt.receipt_id} {receipt.status.value}"]
            + ([outcome.error] if outcome.error else []),
            arguments={"receipt_id": receipt_id},
            subject_id=receipt.draft_id,
            run_id=incident.last_run_id if incident is not None else None,
        )
        failure = None if succeeded else (receipt.receipt_id, receipt.destination_id, receipt.error or "")
    if failure is not None:
        self_monitoring.on_publish_failed(monitor, principal, *failure)


def _record_blocked_attempt(monitor: Monitor, principal: Principal, draft_id: str, error: MonitorError) -> None:
    """A publish the gates stopped still leaves a receipt (status blocked) saying why."""
    with monitor.session() as session:
        draft = session.get(Draft, draft_id)
        if draft is None:
            return
        decision = decide_for_draft(monitor, draft)
        now = monitor.clock()
        session.add(
            Receipt(
                receipt_id=new_id("rcp"),
                draft_id=draft.draft_id,
                incident_id=draft.incident_id,
                destination_id=decision.destination_id or "(none)",
                destination_kind=decision.destination_kind or "(none)",
                route_id=decision.route_id,
                match_reason=decision.match_reason,
                status=ReceiptStatus.blocked,
                evidence_digest=draft.evidence_digest,
                idempotency_key=new_id("blocked"),
                error=error.message,
                published_by=principal.name,
                created_at=now,
                updated_at=now,
            )
        )


def claim_or_record_refusal(monitor: Monitor, principal: Principal, draft_id: str) -> Claim:
    """Step 1, and a refused publish (approval missing, route blocked) leaves a blocked receipt saying why."""
    try:
        return claim(monitor, principal, draft_id)
    except (ApprovalRequired, PublishBlocked) as exc:
        _record_blocked_attempt(monitor, principal, draft_id, exc)
        raise


def publish_result(monitor: Monitor, receipt_id: str, *, reused: bool) -> PublishResult:
    with monitor.session() as session:
        receipt = session.get(Receipt, receipt_id)
        assert receipt is not None
        draft = session.get(Draft, receipt.draft_id)
        assert draft is not None
        return PublishResult(
            receipt=ReceiptBase.model_validate(receipt, from_attributes=True),
            draft_status=draft.status,
            reused=reused,
            next_step=draft_next_step(draft, triaged=True),
        )


class WorkerRunner(Protocol):
    """Runs a synchronous service call off the event loop (the server passes its ``in_worker``)."""

    def __call__(self, service: Callable[..., T], /, *args: Any, **kwargs: Any) -> Awaitable[T]: ...


async def in_thread(service: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    return await anyio.to_thread.run_sync(partial(service, *args, **kwargs))


async def publish_draft(
    monitor: Monitor, principal: Principal, draft_id: str, *, run: WorkerRunner = in_thread
) -> PublishResult:
    """Claim, deliver, settle. The database steps (SQLite, fsync) run in worker threads through ``run``; only the
    adapter call, which is async I/O, runs on the event loop."""
    claimed = await run(claim_or_record_refusal, monitor, principal, draft_id)
    if claimed.request is None or claimed.permit is None:
        return await run(publish_result, monitor, claimed.receipt_id, reused=True)
    outcome = await deliver_holding_lease(monitor, claimed.request, claimed.permit, run=run)
    await run(settle, monitor, principal, claimed.receipt_id, outcome)
    return await run(publish_result, monitor, claimed.receipt_id, reused=False)


def renew_lease(monitor: Monitor, receipt_id: str) -> bool:
    """Extend this replica's lease on a pending receipt it is delivering; False when it no longer holds it."""
    with monitor.session() as session:
        renewed = session.exec(
            update(Receipt)
            .where(col(Receipt.receipt_id) == receipt_id)
            .where(col(Receipt.status) == ReceiptStatus.pending)
            .where(col(Receipt.claimed_by) == PROCESS_REPLICA)
            .values(lease_expires_at=_lease_until(monitor, monitor.clock()))
            .execution_options(synchronize_session=False)
        )
        return renewed.rowcount == 1


async def _keep_lease(monitor: Monitor, receipt_id: str, run: WorkerRunner) -> None:
    interval = monitor.config.store.publish_lease_seconds / 3
    while True:
        await anyio.sleep(interval)
        try:
            if not await run(renew_lease, monitor, receipt_id):
                logger.warning("lost the lease on receipt %s while delivering it", receipt_id)
                return
        except Exception as exc:  # the database is away: the delivery goes on; the outcome is settled later
            logger.warning("could not renew the lease on receipt %s (%s)", receipt_id, type(exc).__name__)


async def deliver_holding_lease(
    monitor: Monitor, request: PublishRequest, permit: PublishPermit, *, run: WorkerRunner = in_thread
) -> PublishOutcome:
    """The adapter call, renewing the claim's lease while it runs (every third of the lease).

    A live replica's slow delivery so keeps its claim; only a dead replica's lease lapses for another's
    recovery to take over, so two deliveries of one receipt overlap only when the holder lost the database.
    """
    async with anyio.create_task_group() as renewing:
        renewing.start_soon(_keep_lease, monitor, request.receipt_id, run)
        outcome = await deliver(monitor, request, permit)
        renewing.cancel_scope.cancel()
    return outcome


def _claimant_gone(receipt: Receipt, now: datetime) -> bool:
    lapsed = receipt.lease_expires_at is None or receipt.lease_expires_at <= now
    return lapsed or is_gone(receipt.claimed_by)


def _pending_work(monitor: Monitor) -> list[tuple[str, PublishRequest, PublishPermit]]:
    """Take over, for this process, the pending receipts whose claimant is gone (never a live lease)."""
    with monitor.session() as session:
        now = monitor.clock()
        pending = session.exec(select(Receipt).where(Receipt.status == ReceiptStatus.pending)).all()
        work: list[tuple[str, PublishRequest, PublishPermit]] = []
        disabled = read_disabled(monitor.engine)
        for receipt in pending:
            if not _claimant_gone(receipt, now):
                continue  # another process is delivering it (and renewing its lease)
            draft = session.get(Draft, receipt.draft_id)
            if draft is None or receipt.destination_id not in monitor.destinations:
                continue
            if receipt.destination_id in disabled:
                continue  # stays pending until an operator re-enables the destination
            # Conditional on the lease it was read with: if another process took or renewed it meanwhile, skip it.
            taken = session.exec(
                update(Receipt)
                .where(col(Receipt.receipt_id) == receipt.receipt_id)
                .where(col(Receipt.status) == ReceiptStatus.pending)
                .where(
                    col(Receipt.lease_expires_at).is_(None)
                    if receipt.lease_expires_at is None
                    else col(Receipt.lease_expires_at) == receipt.lease_expires_at
                )
                .values(claimed_by=PROCESS_REPLICA, lease_expires_at=_lease_until(monitor, now))
                .execution_options(synchronize_session=False)
            )
            if taken.rowcount != 1:
                continue
            session.refresh(receipt)
            request = _request_for(receipt, draft, _labels(monitor, draft, receipt.route_id))
            work.append((receipt.receipt_id, request, _permit_for(receipt)))
    return work


async def recover_pending(monitor: Monitor, *, run: WorkerRunner = in_thread) -> list[str]:
    """Finish publishes whose claimant is gone (a crash), through the same idempotent adapter call."""
    work = await run(_pending_work, monitor)
    for receipt_id, request, permit in work:
        outcome = await deliver_holding_lease(monitor, request, permit, run=run)
        await run(settle, monitor, RECOVERY_PRINCIPAL, receipt_id, outcome)
    return [receipt_id for receipt_id, _, _ in work]


async def recovery_loop(monitor: Monitor, *, run: WorkerRunner = in_thread) -> None:
    """For as long as a server serves: finish pending receipts whose claimant is gone, from start-up on.

    A database that is down is logged and tried again at the next interval, never fatal.
    """
    while True:
        try:
            recovered = await recover_pending(monitor, run=run)
            if recovered:
                logger.warning("finished %d publish(es) left pending by a crash: %s", len(recovered), recovered)
        except Exception as exc:
            logger.warning(
                "publish recovery failed (%s); retrying in %ss",
                type(exc).__name__,
                monitor.config.store.recovery_interval_seconds,
            )
        await anyio.sleep(monitor.config.store.recovery_interval_seconds)


# --- audit checkpoints -------------------------------------------------------------------------------


def send_checkpoint(monitor: Monitor, checkpoint: dict[str, Any]) -> bool:
    """A copy of the checkpoint to a telemetry or webhook destination, beyond this host's reach.

    The destination's own adapter, under a permit minted for exactly this checkpoint; idempotent on
    the checkpoint (a resend is one line / the same webhook-id). A failure is logged, never raised:
    the file copy is written already and the next checkpoint covers this one's rows too.
    """
    destination_id = monitor.config.audit.checkpoint_destination
    if destination_id is None:
        return False
    adapter = monitor.destinations.get(destination_id)
    if adapter is None:
        logger.error("audit checkpoint destination %s is not configured", destination_id)
        return False
    evidence = dict(checkpoint)
    digest = "sha256:" + sha256_hex(evidence)
    seq, row_hash = evidence["seq"], str(evidence["hash"])
    key = f"audit-checkpoint:{seq}:{row_hash[:16]}"
    receipt_id = f"checkpoint-{seq}-{row_hash[:12]}"
    request = PublishRequest(
        receipt_id=receipt_id,
        idempotency_key=key,
        draft_id=receipt_id,
        incident_id="audit-checkpoint",
        destination_id=destination_id,
        route_id=None,
        title=f"Audit checkpoint: seq {seq}",
        body=json.dumps(evidence, sort_keys=True),
        severity="low",
        labels=["audit-checkpoint"],
        fingerprint="audit-checkpoint",
        evidence=evidence,
        evidence_digest=digest,
    )
    permit = issue_permit(
        receipt_id=receipt_id, destination_id=destination_id, evidence_digest=digest, idempotency_key=key
    )
    try:
        outcome = _run_to_completion(adapter.publish, request, permit)
    except Exception:
        logger.exception("audit checkpoint to %s failed", destination_id)
        return False
    if outcome.status == "failed":
        logger.error("audit checkpoint to %s failed: %s", destination_id, outcome.error)
        return False
    return True


def _run_to_completion(function: Callable[..., Awaitable[T]], *args: object) -> T:
    """Run a coroutine from synchronous code: on this thread, or on another when this one runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return anyio.run(partial(function, *args))
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(anyio.run, partial(function, *args)).result()


def attach_checkpoint_delivery(monitor: Monitor) -> Monitor:
    """Send each signed audit checkpoint to ``[audit] checkpoint_destination`` (where a monitor is assembled)."""
    if send_checkpoint not in monitor.checkpoint_sinks:
        monitor.checkpoint_sinks.append(send_checkpoint)
    return monitor
