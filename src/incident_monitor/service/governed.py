"""Every governed action runs inside ``governed_call``: scope check, one unit of work, one audit row.

An allowed call's audit row is committed together with its effect. A denial, a rejection or a
failure is recorded in its own transaction (the effect rolled back), so every decision is in the
audit log exactly once and nothing half-done is stored. Each decision also gets one INFO line on
the ``incident_monitor.audit`` logger (ids and timing only: argument values never reach the log).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from sqlalchemy.engine import Connection
from sqlmodel import Session

from incident_monitor.domain.enums import Decision
from incident_monitor.domain.ids import ID_FIELDS, has_shape
from incident_monitor.errors import (
    ApprovalRequired,
    InsufficientScope,
    MonitorError,
    PermissionDenied,
    PublishBlocked,
    StoreUnavailable,
)
from incident_monitor.policy.engine import check_action
from incident_monitor.policy.principal import Principal
from incident_monitor.policy.redaction import contains_secret
from incident_monitor.policy.scopes import required_scopes
from incident_monitor.service import audit_checkpoints
from incident_monitor.service.audit_chain import append_audit
from incident_monitor.service.monitor import DecisionRecord, Monitor
from incident_monitor.service.run_links import related_run
from incident_monitor.store.group_commit import UnitOfWork

logger = logging.getLogger(__name__)
audit_logger = logging.getLogger("incident_monitor.audit")

# Ids and principal names can come from callers (a made-up draft_id, a JWT subject): one token each,
# so a value cannot forge a field or a line.
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_.:@/-]")


def _loggable(value: str) -> str:
    return _UNSAFE_CHARS.sub("?", value[:100])


def log_decision(
    principal: Principal,
    action: str,
    decision: Decision,
    *,
    subject_id: str | None,
    run_id: str | None,
    started: float,
) -> None:
    """One INFO line per governed call: who, what, the decision, the audit row's ids and the duration.

    The same fields go in ``extra`` for structured (JSON) formatters; the timestamp is the formatter's.
    """
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    who, what = _loggable(principal.name), _loggable(action)
    ids = {name: _loggable(value) for name, value in (("subject_id", subject_id), ("run_id", run_id)) if value}
    audit_logger.info(
        "governed call tool=%s principal=%s decision=%s ids=%s duration_ms=%.1f",
        what,
        who,
        decision.value,
        ",".join(f"{name}={value}" for name, value in ids.items()) or "-",
        duration_ms,
        extra={
            "principal": who,
            "action": what,
            "decision": decision.value,
            "ids": ids,
            "duration_ms": duration_ms,
        },
    )


def safe_subject(arguments: Any, subject_id: str | None) -> str | None:
    """The caller-given subject as the audit row and the log may keep it: an id field's value only with
    that field's shape, any other value only when it carries no secret (else no subject at all)."""
    if subject_id is None:
        return None
    if isinstance(arguments, dict):
        for name in ID_FIELDS:
            if arguments.get(name) == subject_id:
                return subject_id if has_shape(name, subject_id) else None
    return None if contains_secret(subject_id) else subject_id


_TOOL_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def shown_tool_name(name: object) -> str:
    """An unknown tool's name as errors, audit rows and logs may repeat it: only a plain tool-like name
    that carries no secret; anything else is "(invalid)"."""
    if isinstance(name, str) and _TOOL_NAME.fullmatch(name) and not contains_secret(name):
        return name
    return "(invalid)"


class GovernedCall:
    """What a governed call's body works with: its unit of work, and what the audit row will say.

    The unit of work (and with it the store's write turn: BEGIN IMMEDIATE, or PostgreSQL's advisory lock) is
    taken on first use of ``unit``, ``session`` or ``connection()``, or at the end for the audit row. A body
    that first does work needing no store (a report's limits, redaction, fingerprint) does it outside the
    turn, so it overlaps other calls' commits instead of holding up the batch behind it.
    """

    def __init__(
        self,
        open_unit: Callable[[], UnitOfWork],
        principal: Principal,
        action: str,
        *,
        subject_id: str | None = None,
        run_id: str | None = None,
    ) -> None:
        self._open_unit = open_unit
        self._unit: UnitOfWork | None = None
        self.principal = principal
        self.action = action
        self.subject_id = subject_id
        self.run_id = run_id
        self.notes: list[str] = []

    @property
    def unit(self) -> UnitOfWork:
        """The call's unit of work (its write turn taken on first use)."""
        if self._unit is None:
            self._unit = self._open_unit()
        return self._unit

    @property
    def session(self) -> Session:
        """The call's ORM session (made on first use)."""
        return self.unit.session

    def connection(self) -> Connection:
        """The call's Core connection, in the same transaction as ``session``."""
        return self.unit.connection()


def decision_for(exc: MonitorError) -> Decision:
    if isinstance(exc, PermissionDenied | PublishBlocked):
        return Decision.deny
    if isinstance(exc, ApprovalRequired):
        return Decision.approval_required
    return Decision.rejected


def record_decision(
    monitor: Monitor,
    principal: Principal,
    action: str,
    decision: Decision,
    reasons: list[str],
    arguments: Any,
    *,
    subject_id: str | None = None,
    run_id: str | None = None,
    started: float | None = None,
) -> None:
    """Record a decision in its own transaction (used for everything that stores no effect).

    ``started`` is when the call began (``time.perf_counter()``); without it the line times the recording.
    """
    started = time.perf_counter() if started is None else started
    with monitor.unit() as unit:
        append_audit(
            unit,
            monitor.audit_keys,
            at=monitor.clock(),
            principal=principal.name,
            action=action,
            decision=decision,
            reasons=reasons,
            arguments=arguments,
            subject_id=subject_id,
            run_id=run_id,
        )
    log_decision(principal, action, decision, subject_id=subject_id, run_id=run_id, started=started)
    tell_listeners(
        monitor, DecisionRecord(principal, action, decision, reasons, arguments, subject_id=subject_id, run_id=run_id)
    )


def tell_listeners(monitor: Monitor, record: DecisionRecord) -> None:
    """After the decision's commit: a listener's own work (a self-monitoring report) is its own governed call."""
    audit_checkpoints.after_decision(monitor)
    for listener in monitor.decision_listeners:
        listener(monitor, record)


# Actions kept from agents by design: a refusal names the call to make instead of a token to ask for.
INSTEAD_OF_A_BROADER_TOKEN = {
    "decide_approval": "Agents do not decide approvals: call request_approval with the draft_id and a reason; "
    "an operator decides (incident-monitor approvals approve|deny).",
    "resolve_incident": "An operator resolves incidents (incident-monitor incidents resolve INCIDENT_ID --note ...); "
    "a recurrence reopens them.",
}


def deny_if_not_allowed(
    monitor: Monitor, principal: Principal, action: str, arguments: Any, *, started: float | None = None
) -> None:
    decision = check_action(principal, action)
    if decision.allowed:
        return
    if principal.credential_problem:
        message = f"permission denied: {principal.credential_problem}"
        reasons = [principal.credential_problem]
    elif decision.missing_scopes:
        # Name every scope the action needs, not only the missing ones, so one new token suffices.
        needed = ", ".join(sorted(required_scopes(action) or ()))
        message = (
            f"permission denied: {action} needs scope {needed} (missing: {', '.join(decision.missing_scopes)}); "
            f"{principal.name} has {', '.join(sorted(principal.scopes)) or 'no scopes'}. "
            + INSTEAD_OF_A_BROADER_TOKEN.get(action, "Ask an operator for a token with that scope.")
        )
        reasons = list(decision.reasons)
    else:
        message = f"permission denied: {action} needs scope (unknown action); denied (fail closed)"
        reasons = list(decision.reasons)
    # The refusal joins the timeline of the run whose draft/incident/approval the call named.
    run_id = related_run(monitor, arguments)
    record_decision(monitor, principal, action, Decision.deny, reasons, arguments, run_id=run_id, started=started)
    if decision.missing_scopes and not principal.credential_problem:
        raise InsufficientScope(message, reasons=reasons)
    raise PermissionDenied(message, reasons=reasons)


@contextmanager
def governed_call(
    monitor: Monitor,
    principal: Principal,
    action: str,
    arguments: Any,
    *,
    subject_id: str | None = None,
    run_id: str | None = None,
    defer_unit: bool = False,
) -> Iterator[GovernedCall]:
    """Scope check, then the body and its audit row in one unit of work; refusals and failures audited apart.

    ``defer_unit``: the unit of work (the store's write turn) is taken when the body first uses it rather than
    before the body runs. Only for a body whose work before its first store access stores nothing (a nested
    unit of work there commits apart from the call's audit row). A body that awaits must use it and take the
    unit only after its last await: a turn held by the event loop's thread across an await would stall every
    other writer, and the loop's other calls would join it as if nested in it.
    """
    started = time.perf_counter()
    subject_id = safe_subject(arguments, subject_id)
    deny_if_not_allowed(monitor, principal, action, arguments, started=started)
    call: GovernedCall | None = None
    try:
        with ExitStack() as units:
            call = GovernedCall(
                lambda: units.enter_context(monitor.unit()), principal, action, subject_id=subject_id, run_id=run_id
            )
            if not defer_unit:
                call.unit  # noqa: B018 (taking the write turn now: the body's store work is atomic with its row)
            yield call
            allowed = DecisionRecord(
                principal,
                action,
                Decision.allow,
                [*check_action(principal, action).reasons, *call.notes],
                arguments,
                subject_id=call.subject_id,
                run_id=call.run_id,
            )
            append_audit(
                call.unit,
                monitor.audit_keys,
                at=monitor.clock(),
                principal=principal.name,
                action=action,
                decision=Decision.allow,
                reasons=allowed.reasons,
                arguments=arguments,
                subject_id=call.subject_id,
                run_id=call.run_id,
            )
    except StoreUnavailable:
        raise  # nothing can be recorded while the store is down; store/faults.py logged the fault once
    except MonitorError as exc:
        record_decision(
            monitor,
            principal,
            action,
            decision_for(exc),
            exc.reasons,
            arguments,
            subject_id=call.subject_id if call else subject_id,
            run_id=call.run_id if call else run_id,
            started=started,
        )
        raise
    except Exception:
        logger.exception("%s failed for %s", action, principal.name)
        record_decision(
            monitor,
            principal,
            action,
            Decision.error,
            ["internal error (see server log)"],
            arguments,
            subject_id=call.subject_id if call else subject_id,
            started=started,
        )
        raise
    # After the commit, so the line never reports an effect that was rolled back.
    log_decision(principal, action, Decision.allow, subject_id=call.subject_id, run_id=call.run_id, started=started)
    tell_listeners(monitor, allowed)
