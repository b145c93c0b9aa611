"""Intake: redact, check, dedupe by fingerprint, and open an incident with its draft.

Nothing is stored before redaction and the size and noise checks have passed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Update, bindparam, insert, select, update

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
from incident_monitor.domain.levels import LEVEL_SEVERITY
from incident_monitor.domain.models import Draft, Incident, IncidentOccurrence, new_id, table_of
from incident_monitor.domain.transitions import check_incident_transition
from incident_monitor.errors import InvalidInput, ReportRejected
from incident_monitor.policy.principal import Principal
from incident_monitor.policy.redaction import redact_json, redact_text
from incident_monitor.policy.report_severity import report_severity
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor

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


# Intake runs on every report, so its statements are Core, compiled once: the ORM's unit of work and
# model construction cost several times the rest of a report (benchmarks/, issue 6).
_INCIDENTS = table_of(Incident)
_DRAFTS = table_of(Draft)
_OCCURRENCES = table_of(IncidentOccurrence)
_FIND_INCIDENT = select(
    _INCIDENTS.c.incident_id,
    _INCIDENTS.c.status,
    _INCIDENTS.c.severity,
    _INCIDENTS.c.occurrence_count,
).where(_INCIDENTS.c.fingerprint == bindparam("fingerprint"))
_LATEST_DRAFT = (
    select(_DRAFTS.c.draft_id, _DRAFTS.c.status)
    .where(_DRAFTS.c.incident_id == bindparam("incident_id"))
    .order_by(_DRAFTS.c.created_at.desc())
    .limit(1)
)
_INCIDENT_ROW = select(_INCIDENTS).where(_INCIDENTS.c.incident_id == bindparam("incident_id"))


_INSERT_INCIDENT = insert(_INCIDENTS)
_INSERT_DRAFT = insert(_DRAFTS)
_INSERT_OCCURRENCE = insert(_OCCURRENCES)


def _seen_again(*, reopen: bool) -> Update:
    """Count one more occurrence (and reopen a resolved incident) in one statement."""
    values: dict[str, Any] = {
        "occurrence_count": _INCIDENTS.c.occurrence_count + 1,
        "last_seen_at": bindparam("now"),
        "last_run_id": bindparam("run_id"),
        "last_session_id": bindparam("session_id"),
    }
    if reopen:
        values |= {"status": IncidentStatus.open, "recurrence_count": _INCIDENTS.c.recurrence_count + 1}
    return update(_INCIDENTS).where(_INCIDENTS.c.incident_id == bindparam("target_id")).values(values)


_SEEN_AGAIN = _seen_again(reopen=False)
_SEEN_AGAIN_REOPENED = _seen_again(reopen=True)


def new_draft(connection: Connection, incident: Mapping[str, Any], now: datetime) -> str:
    """Insert the draft of an incident's evidence; returns its draft_id."""
    evidence = build_evidence(incident)
    digest = evidence_digest(evidence)
    draft_id = new_id("drf")
    connection.execute(
        _INSERT_DRAFT,
        {
            "draft_id": draft_id,
            "incident_id": incident["incident_id"],
            "status": DraftStatus.draft,
            "title": evidence["incident"]["title"],
            "body": render_body(evidence, digest),
            "severity": draft_severity(evidence),
            "source": evidence["incident"]["source"],
            "route_tags": draft_route_tags(evidence),
            "evidence": evidence,
            "evidence_digest": digest,
            "revision": 1,
            "created_at": now,
            "updated_at": now,
        },
    )
    return draft_id


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
        severity, note = report_severity(monitor.config, principal, clean, severity_for(level, clean.risk_level))
        if note:
            call.notes.append(note)
        fingerprint = clean.fingerprint or compute_fingerprint(clean)
        now = monitor.clock()
        connection = call.session.connection()
        # BEGIN IMMEDIATE: the write lock is ours, so the row read here cannot change before commit.
        found = connection.execute(_FIND_INCIDENT, {"fingerprint": fingerprint}).first()
        recurrence = False
        draft_id: str | None
        if found is None:
            incident: dict[str, Any] = {
                "incident_id": new_id("inc"),
                "fingerprint": fingerprint,
                "title": clean.title,
                "detail": clean.detail,
                "source": clean.source,
                "event": clean.event,
                "level": level,
                "severity": severity,
                "status": IncidentStatus.open,
                "risk_category": clean.risk_category,
                "risk_level": clean.risk_level,
                "project_id": clean.project_id,
                "route_tags": sorted(set(clean.route_tags)),
                "evidence_refs": clean.evidence_refs,
                "context": clean.context,
                "occurrence_count": 1,
                "recurrence_count": 0,
                "reported_by": principal.name,
                "first_seen_at": now,
                "last_seen_at": now,
                "resolved_at": None,
                "resolved_by": None,
                "resolution_note": None,
                "last_run_id": clean.run_id,
                "last_session_id": clean.session_id,
            }
            connection.execute(_INSERT_INCIDENT, incident)
            incident_id, status, stored_severity = incident["incident_id"], IncidentStatus.open, severity
            occurrences = 1
            draft_id = new_draft(connection, incident, now)
            draft_status: DraftStatus | None = DraftStatus.draft
            deduplicated = False
        else:
            deduplicated = True
            incident_id, status, stored_severity = found.incident_id, found.status, found.severity
            if status is IncidentStatus.resolved:
                check_incident_transition(incident_id, status, IncidentStatus.open)
                status, recurrence = IncidentStatus.open, True
            connection.execute(
                _SEEN_AGAIN_REOPENED if recurrence else _SEEN_AGAIN,
                {"target_id": incident_id, "now": now, "run_id": clean.run_id, "session_id": clean.session_id},
            )
            occurrences = found.occurrence_count + 1
            latest = connection.execute(_LATEST_DRAFT, {"incident_id": incident_id}).first()
            draft_id = latest.draft_id if latest is not None else None
            draft_status = latest.status if latest is not None else None
            # A recurrence after publication needs a fresh draft; otherwise the open draft stands.
            if recurrence and (latest is None or latest.status is DraftStatus.published):
                row = connection.execute(_INCIDENT_ROW, {"incident_id": incident_id}).one()._asdict()
                draft_id, draft_status = new_draft(connection, row, now), DraftStatus.draft
        connection.execute(
            _INSERT_OCCURRENCE,
            {
                "occurrence_id": new_id("occ"),
                "incident_id": incident_id,
                "seen_at": now,
                "reported_by": principal.name,
                "run_id": clean.run_id,
                "session_id": clean.session_id,
                "detail_digest": "sha256:" + sha256_hex(clean.detail),
                "recurrence": recurrence,
            },
        )
        call.subject_id = incident_id
        call.notes.append("deduplicated by fingerprint" if deduplicated else "new incident")
        if draft_id is None:
            next_step = f"call get_incident with incident_id={incident_id}"
        elif draft_status is DraftStatus.draft:
            next_step = f"call triage_draft with draft_id={draft_id}"
        else:
            # A repeat of an incident whose draft is already further along: its own next_step says what follows.
            next_step = f"call get_draft with draft_id={draft_id} (its draft is {draft_status}); follow its next_step"
        return ReportResult(
            incident_id=incident_id,
            draft_id=draft_id,
            fingerprint=fingerprint,
            severity=stored_severity,
            status=status,
            deduplicated=deduplicated,
            recurrence=recurrence,
            occurrence_count=occurrences,
            redacted_fields=redacted,
            next_step=next_step,
        )
