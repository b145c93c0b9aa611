"""Self-monitoring: incidents about the governance layer itself.

What opens (or dedupes into) a self-monitoring incident, and at which severity:

| trigger (where it is hooked)                                   | kind            | severity |
|----------------------------------------------------------------|-----------------|----------|
| a call the policy denied or blocked (a decision listener)      |                 |          |
|   - of a high-impact action (publish, approve, resolve, tokens)  | blocked_call    | critical |
|   - of any other action (reads, report, triage, preview, …)      | blocked_call    | medium   |
| a governed call that failed with an internal error               | failed_call     | critical |
| a publish whose delivery failed (``publishing.settle``)          | publish_failed  | critical |
| an approval an operator denied (``approvals.decide_approval``)   | approval_denied | high     |
| the same medium/low trigger ``repeated_failure_threshold`` times | repeated        | high     |
| a refused downstream tool (service/downstream/guard.py)          | blocked_action  | medium   |

A call of an unknown tool opens nothing (its audit row says deny), nor does rejected input.

A blocked action is never escalated as "repeated": a looping agent raises one incident whose count rises.

Decisions reach it as a decision listener of the monitor (``attach`` registers it where a monitor is
assembled for serving, and in the tests' monitor fixture); governed calls do not import this module.

Run errors reported by an agent are ordinary reports (``report_incident``): a report whose event
ends in ``failed``/``error``/``errored``/``crashed``/``aborted`` at level error or above is a run
error; it is linked to the reporting run by its ``run_id`` (``get_incident`` shows that run's
timeline), and a report from one of ``self_monitoring.development_sources`` is severity low
(an explicit ``risk_level`` can still raise it; routing still requires approval by the level).
Both rules are policy/report_severity.py.

Every self-monitoring incident goes through the intake path (redaction, limits, dedupe) as the
system principal ``system:self-monitor`` with the fingerprint ``selfmon:<kind>:<action>:<principal>``,
and is linked to the caller's run and session when the call names a draft, incident, approval or
receipt (or a run id). Three guards stop loops: nothing is recorded while a self-monitoring report
is being written, nothing about the self-monitor's own calls, and nothing about an action on a
self-monitoring incident (so an incident about the monitor never triggers more incidents — and
nothing here ever triages). A failure here is logged and never breaks the original call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from incident_monitor.domain.enums import Decision, Severity
from incident_monitor.domain.io import IncidentReport
from incident_monitor.domain.levels import LEVEL_FOR_SEVERITY
from incident_monitor.domain.models import Incident
from incident_monitor.policy.principal import SELF_MONITOR, Principal
from incident_monitor.policy.scopes import is_downstream_tool
from incident_monitor.service.intake import SELF_MONITORING_PREFIX, report_incident
from incident_monitor.service.monitor import DecisionRecord, Monitor
from incident_monitor.service.run_links import link_call

logger = logging.getLogger(__name__)

SELF_MONITORING_TAG = "self-monitoring"
FINGERPRINT_PREFIX = SELF_MONITORING_PREFIX  # intake keeps this namespace for the self-monitor alone

# Denying one of these stops an effect on the outside world or on who may do what.
HIGH_IMPACT_ACTIONS = frozenset({"publish_draft", "decide_approval", "resolve_incident", "manage_tokens"})
_TITLES = {
    "blocked_call": "Blocked call",
    "failed_call": "Failed call",
    "publish_failed": "Publish failed",
    "approval_denied": "Approval denied",
    "blocked_action": "Blocked action",
    "code_change_failed": "Code change failed",
}
_MAX_DETAIL_CHARS = 4_000

_recording: ContextVar[bool] = ContextVar("incident_monitor_self_monitoring", default=False)


@contextmanager
def _guard() -> Iterator[None]:
    token = _recording.set(True)
    try:
        yield
    finally:
        _recording.reset(token)


# --- classification (pure) -------------------------------------------------------------------------


def severity_for_decision(kind: str, action: str) -> Severity:
    if kind in ("publish_failed", "failed_call"):
        return Severity.critical
    if kind in ("approval_denied", "code_change_failed"):
        return Severity.high
    return Severity.critical if action in HIGH_IMPACT_ACTIONS else Severity.medium


def is_self_monitoring_incident(incident: Incident) -> bool:
    # The bare prefix only: no caller can store it (intake scopes every caller's fingerprint), while any
    # reporter may add the route tag.
    return incident.fingerprint.startswith(FINGERPRINT_PREFIX)


# --- recording ---------------------------------------------------------------------------------------


def _record(
    monitor: Monitor,
    *,
    kind: str,
    action: str,
    actor: str,
    reasons: list[str],
    subject_id: str | None = None,
    run_id: str | None = None,
    arguments: Any = None,
) -> None:
    settings = monitor.config.self_monitoring
    # Only on a monitor it is attached to: publishing and approvals call in directly, and a monitor
    # assembled without self-monitoring (a probe's scratch monitor) must stay quiet for them too.
    attached = on_decision in monitor.decision_listeners
    if not attached or not settings.enabled or _recording.get() or actor == SELF_MONITOR.name:
        return
    with _guard():
        try:
            link = link_call(monitor, subject_id, arguments, run_id)
            if link.incident is not None and is_self_monitoring_incident(link.incident):
                return  # an action on an incident about the monitor: no incident about that incident
            severity = severity_for_decision(kind, action)
            fingerprint = f"{FINGERPRINT_PREFIX}{kind}:{action}:{actor}"[:200]
            evidence_refs = [f"audit:run:{link.run_id}"] if link.run_id else []
            evidence_refs += [f"audit:subject:{ref}" for ref in (subject_id,) if ref]
            if link.incident is not None:
                evidence_refs.append(f"incident:{link.incident.incident_id}")
            detail = (
                f"{_TITLES[kind]}: {action} by {actor}.\nReasons:\n- "
                + "\n- ".join(reasons or ["(none recorded)"])
                + "\nThe decision is in the audit log"
                + (f"; the run's timeline is under run {link.run_id}." if link.run_id else ".")
            )[:_MAX_DETAIL_CHARS]

            def send(fp: str, title: str, sev: Severity) -> int:
                result = report_incident(
                    monitor,
                    SELF_MONITOR,
                    IncidentReport(
                        title=title[:200],
                        detail=detail,
                        source=settings.source,
                        event=f"incident_monitor.self.{kind}",
                        level=LEVEL_FOR_SEVERITY[sev],
                        fingerprint=fp,
                        route_tags=[SELF_MONITORING_TAG],
                        run_id=link.run_id,
                        session_id=link.session_id,
                        evidence_refs=evidence_refs,
                        context={
                            "self_monitoring": True,
                            "kind": kind,
                            "action": action,
                            "principal": actor,
                            "subject_id": subject_id,
                        },
                    ),
                )
                return result.occurrence_count

            count = send(fingerprint, f"{_TITLES[kind]}: {action} by {actor}", severity)
            if (
                kind != "blocked_action"
                and severity.rank < Severity.high.rank
                and count >= settings.repeated_failure_threshold
            ):
                send(
                    f"{FINGERPRINT_PREFIX}repeated:{kind}:{action}:{actor}"[:200],
                    f"Repeated {_TITLES[kind].lower()}: {action} by {actor}",
                    Severity.high,
                )
        except Exception:
            logger.exception("self-monitoring could not record %s of %s by %s", kind, action, actor)


def attach(monitor: Monitor) -> Monitor:
    """Register self-monitoring as a decision listener of ``monitor`` (once); returns the monitor."""
    if on_decision not in monitor.decision_listeners:
        monitor.decision_listeners.append(on_decision)
    return monitor


def on_decision(monitor: Monitor, record: DecisionRecord) -> None:
    """A recorded decision: denials and internal errors become incidents; the rest is normal flow."""
    kinds = {Decision.deny: "blocked_call", Decision.error: "failed_call"}
    kind = kinds.get(record.decision)
    if kind is None or record.action.startswith("tool:"):
        # An unknown tool's name is a malformed call like bad arguments: denied and audited, and it pages no
        # one (any credential, even one with no scope, could otherwise raise incidents at will) (issue 12).
        return
    if kind == "blocked_call" and is_downstream_tool(record.action):
        kind = "blocked_action"
    action, reasons = record.action, record.reasons
    _record(
        monitor,
        kind=kind,
        action=action,
        actor=record.principal.name,
        reasons=reasons,
        subject_id=record.subject_id,
        run_id=record.run_id,
        arguments=record.arguments,
    )


def on_publish_failed(monitor: Monitor, principal: Principal, receipt_id: str, destination_id: str, error: str) -> None:
    _record(
        monitor,
        kind="publish_failed",
        action=f"publish_draft:{destination_id}",
        actor=principal.name,
        reasons=[f"receipt {receipt_id} failed: {error}"],
        subject_id=receipt_id,
    )


def on_approval_denied(monitor: Monitor, principal: Principal, approval_id: str, requested_by: str, note: str) -> None:
    _record(
        monitor,
        kind="approval_denied",
        action="decide_approval",
        actor=requested_by,
        reasons=[f"approval {approval_id} requested by {requested_by} was denied by {principal.name}: {note}"],
        subject_id=approval_id,
    )


def on_code_change_failed(monitor: Monitor, run_id: str, incident_id: str, reason: str) -> None:
    """A delegated code change that errored or failed: an incident linked to the run and its incident."""
    _record(
        monitor,
        kind="code_change_failed",
        action=f"code_change:{run_id}",
        actor="system:code-change",
        reasons=[f"code change {run_id} (incident {incident_id}): {reason}"],
        subject_id=incident_id,
    )
