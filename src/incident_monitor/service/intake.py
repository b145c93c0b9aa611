"""Intake: redact, check, dedupe by fingerprint, and open an incident with its draft.

Nothing is stored before redaction and the size and noise checks have passed.
"""

from __future__ import annotations

import re
from typing import Any

from sqlmodel import Session, col, select

from incident_monitor.config import Limits, MonitorConfig
from incident_monitor.domain.enums import DraftStatus, IncidentStatus, Severity
from incident_monitor.domain.evidence import (
    build_evidence,
    draft_route_tags,
    draft_severity,
    evidence_digest,
    render_body,
    sha256_hex,
)
from incident_monitor.domain.io import IncidentReport, ReportResult
from incident_monitor.domain.models import Draft, Incident, IncidentOccurrence, new_id
from incident_monitor.domain.transitions import check_incident_transition
from incident_monitor.errors import InvalidInput, ReportRejected
from incident_monitor.policy.principal import Principal
from incident_monitor.policy.redaction import redact_json, redact_text
from incident_monitor.service import self_monitoring
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor

LEVEL_SEVERITY: dict[str, Severity] = {
    "emergency": Severity.critical,
    "fatal": Severity.critical,
    "critical": Severity.critical,
    "alert": Severity.critical,
    "error": Severity.high,
    "err": Severity.high,
    "warning": Severity.medium,
    "warn": Severity.medium,
    "notice": Severity.low,
    "info": Severity.low,
    "debug": Severity.low,
    "trace": Severity.low,
}

_VOLATILE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\b[0-9a-f]{7,64}\b|\d+", re.IGNORECASE
)


def severity_for(level: str, risk_level: Severity | None) -> Severity:
    return Severity.highest(LEVEL_SEVERITY[level], risk_level)


def compute_fingerprint(report: IncidentReport) -> str:
    """From stable fields only — never run or session ids — so repeats of one failure dedupe."""
    title = " ".join(_VOLATILE.sub("#", report.title.lower()).split())
    stable = {
        "source": report.source,
        "event": report.event,
        "project_id": report.project_id,
        "risk_category": report.risk_category,
        "title": title,
    }
    return "fp_" + sha256_hex(stable)[:32]


def _check_limits(report: IncidentReport, limits: Limits) -> None:
    problems: list[str] = []

    def over(field: str, size: int, limit: int, key: str, fix: str) -> None:
        if size > limit:
            problems.append(f"{field}: {size} characters, limit {limit} (limits.{key}); {fix}")

    over(
        "title",
        len(report.title),
        limits.max_title_chars,
        "max_title_chars",
        "shorten it and move the rest to detail",
    )
    over(
        "detail",
        len(report.detail),
        limits.max_detail_chars,
        "max_detail_chars",
        "trim it and link logs in evidence_refs",
    )
    if len(report.evidence_refs) > limits.max_evidence_refs:
        problems.append(
            f"evidence_refs: {len(report.evidence_refs)} items, limit {limits.max_evidence_refs} "
            "(limits.max_evidence_refs); keep the most relevant ones"
        )
    for i, ref in enumerate(report.evidence_refs):
        over(
            f"evidence_refs[{i}]",
            len(ref),
            limits.max_evidence_ref_chars,
            "max_evidence_ref_chars",
            "link, don't inline",
        )
    if len(report.route_tags) > limits.max_route_tags:
        problems.append(
            f"route_tags: {len(report.route_tags)} tags, limit {limits.max_route_tags} (limits.max_route_tags); "
            "keep fewer tags"
        )
    for i, tag in enumerate(report.route_tags):
        over(f"route_tags[{i}]", len(tag), limits.max_field_chars, "max_field_chars", "use a short tag")
    context_size = len(str(report.context))
    over("context", context_size, limits.max_detail_chars, "max_detail_chars", "send less structured context")
    if report.level.lower() not in LEVEL_SEVERITY:
        problems.append("level: not a known level; use one of: critical, error, warning, info")
    if problems:
        raise InvalidInput("report invalid:\n  - " + "\n  - ".join(problems), reasons=problems)


def _check_noise(report: IncidentReport, config: MonitorConfig) -> None:
    level = report.level.lower()
    last_segment = re.split(r"[.:/]", report.event.lower())[-1]
    if last_segment in config.intake.noise_event_suffixes:
        raise ReportRejected(
            f"report rejected as routine noise: event '{report.event}' ends in '{last_segment}' "
            "(intake.noise_event_suffixes). Report failures and safety signals, not progress."
        )
    if level in config.intake.noise_levels:
        raise ReportRejected(
            f"report rejected as routine noise: level '{level}' (intake.noise_levels). Report at warning or above."
        )


def _redact(report: IncidentReport) -> tuple[IncidentReport, list[str]]:
    """Redact every free-text field; returns the clean report and the names of fields that changed."""
    changed: list[str] = []
    values: dict[str, Any] = report.model_dump()
    for name in (
        "title",
        "detail",
        "source",
        "event",
        "fingerprint",
        "risk_category",
        "project_id",
        "run_id",
        "session_id",
    ):
        value = values[name]
        if isinstance(value, str):
            clean = redact_text(value)
            if clean != value:
                changed.append(name)
                values[name] = clean
    for name in ("route_tags", "evidence_refs", "context"):
        clean = redact_json(values[name])
        if clean != values[name]:
            changed.append(name)
            values[name] = clean
    return IncidentReport.model_validate(values), changed


def new_draft(session: Session, incident: Incident, now: Any) -> Draft:
    evidence = build_evidence(incident)
    digest = evidence_digest(evidence)
    draft = Draft(
        draft_id=new_id("drf"),
        incident_id=incident.incident_id,
        status=DraftStatus.draft,
        title=incident.title,
        body=render_body(evidence, digest),
        severity=draft_severity(evidence),
        source=incident.source,
        route_tags=draft_route_tags(evidence),
        evidence=evidence,
        evidence_digest=digest,
        created_at=now,
        updated_at=now,
    )
    session.add(draft)
    return draft


def _latest_draft(session: Session, incident_id: str) -> Draft | None:
    return session.exec(
        select(Draft).where(Draft.incident_id == incident_id).order_by(col(Draft.created_at).desc()).limit(1)
    ).first()


def report_incident(monitor: Monitor, principal: Principal, report: IncidentReport) -> ReportResult:
    arguments = report.model_dump(mode="json")
    with governed_call(monitor, principal, "report_incident", arguments) as call:
        # Sizes first, on the raw report: bounds the redaction work and names the caller's own field.
        _check_limits(report, monitor.config.limits)
        clean, redacted = _redact(report)
        call.run_id = clean.run_id  # only after redaction: the audit row must not carry a secret
        _check_noise(clean, monitor.config)
        if redacted:
            call.notes.append(f"redacted secrets in: {', '.join(redacted)}")
        level = clean.level.lower()
        severity, note = self_monitoring.report_severity(
            monitor.config, principal, clean, severity_for(level, clean.risk_level)
        )
        if note:
            call.notes.append(note)
        fingerprint = clean.fingerprint or compute_fingerprint(clean)
        now = monitor.clock()
        session = call.session
        incident = session.exec(select(Incident).where(Incident.fingerprint == fingerprint)).first()
        recurrence = False
        if incident is None:
            incident = Incident(
                incident_id=new_id("inc"),
                fingerprint=fingerprint,
                title=clean.title,
                detail=clean.detail,
                source=clean.source,
                event=clean.event,
                level=level,
                severity=severity,
                risk_category=clean.risk_category,
                risk_level=clean.risk_level,
                project_id=clean.project_id,
                route_tags=sorted(set(clean.route_tags)),
                evidence_refs=clean.evidence_refs,
                context=clean.context,
                reported_by=principal.name,
                first_seen_at=now,
                last_seen_at=now,
                last_run_id=clean.run_id,
                last_session_id=clean.session_id,
            )
            session.add(incident)
            session.flush()
            draft: Draft | None = new_draft(session, incident, now)
            deduplicated = False
        else:
            deduplicated = True
            if incident.status is IncidentStatus.resolved:
                check_incident_transition(incident.incident_id, incident.status, IncidentStatus.open)
                incident.status = IncidentStatus.open
                incident.recurrence_count += 1
                recurrence = True
            incident.occurrence_count += 1
            incident.last_seen_at = now
            incident.last_run_id = clean.run_id
            incident.last_session_id = clean.session_id
            session.add(incident)
            draft = _latest_draft(session, incident.incident_id)
            # A recurrence after publication needs a fresh draft; otherwise the open draft stands.
            if recurrence and (draft is None or draft.status is DraftStatus.published):
                draft = new_draft(session, incident, now)
        session.add(
            IncidentOccurrence(
                occurrence_id=new_id("occ"),
                incident_id=incident.incident_id,
                seen_at=now,
                reported_by=principal.name,
                run_id=clean.run_id,
                session_id=clean.session_id,
                detail_digest="sha256:" + sha256_hex(clean.detail),
                recurrence=recurrence,
            )
        )
        call.subject_id = incident.incident_id
        call.notes.append("deduplicated by fingerprint" if deduplicated else "new incident")
        session.flush()
        if draft is not None:
            next_step = f"call get_draft or triage_draft with draft_id={draft.draft_id}"
        else:
            next_step = f"call get_incident with incident_id={incident.incident_id}"
        return ReportResult(
            incident_id=incident.incident_id,
            draft_id=draft.draft_id if draft else None,
            fingerprint=fingerprint,
            severity=incident.severity,
            status=incident.status,
            deduplicated=deduplicated,
            recurrence=recurrence,
            occurrence_count=incident.occurrence_count,
            redacted_fields=redacted,
            next_step=next_step,
        )
