"""Intake: redact, check, dedupe by fingerprint, and open an incident with its draft.

Nothing is stored before redaction and the size and noise checks have passed.

Tenant isolation. A report dedupes only within its scope, so no reporter can reach, reveal, reopen or
squat another's incident, whatever fingerprint it sends:

- a report naming a project is scoped to that project (``project:<id>``): every intake key and agent
  reporting for the project shares its incidents, and nobody outside it does;
- a report naming no project is scoped to its reporter (``principal:<name>``, the name percent-encoded
  so it cannot contain the ``|`` that ends a scope);
- self-monitoring reports keep their bare ``selfmon:…`` fingerprints. Every caller's key starts with
  ``project:`` or ``principal:``, so that namespace is the monitor's alone, and a caller fingerprint
  starting with ``selfmon:`` is refused outright (it could only be an attempt to pass as one).

The incident's ``fingerprint`` column holds the scoped key (``<scope>|<fingerprint>``); reports return
it, and sending it back as ``fingerprint`` dedupes as expected (a report's own scope prefix is not
added twice). No schema change: incidents stored before scoping keep their unscoped fingerprint and
are still found by a report of the same project (or, with no project, the same reporter).

Project ids are matched exactly against the declared ``[[projects]]``: a ``project_id`` that is not
exactly a declared id — another case, a trailing space, or any id when none are declared — is refused
(``project_unknown``, naming the declared ids), never normalised.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from sqlalchemy import ColumnElement, Connection, Update, and_, bindparam, case, or_, select, update

from incident_monitor.config import Limits, MonitorConfig
from incident_monitor.domain.enums import ApprovalStatus, DraftStatus, IncidentStatus, Severity
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
from incident_monitor.domain.models import ApprovalRequest, Draft, Incident, IncidentOccurrence, new_id, table_of
from incident_monitor.domain.transitions import check_incident_transition
from incident_monitor.errors import InvalidInput, ReportRejected
from incident_monitor.policy.principal import SELF_MONITOR, Principal
from incident_monitor.policy.redaction import redact_adjacent, redact_json, redact_text
from incident_monitor.policy.report_severity import report_severity
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor
from incident_monitor.store.prepared import Prepared

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


# The self-monitor's namespace: its fingerprints are stored bare, which no caller's can be.
SELF_MONITORING_PREFIX = "selfmon:"


class ProjectUnknown(InvalidInput):
    code = "project_unknown"


def check_project(config: MonitorConfig, project_id: str | None) -> None:
    """The one rule: a project_id must be exactly the id of a declared project (see the module docstring)."""
    if project_id is None or config.project(project_id) is not None:
        return
    declared = ", ".join(p.id for p in config.projects)
    fix = f"use one of: {declared}" if declared else "no projects are declared: omit project_id"
    # The value is not repeated: it may be anything, a credential included.
    raise ProjectUnknown(f"project_id: not a declared project (ids match exactly); {fix}")


def is_self_monitor(principal: Principal) -> bool:
    return principal.kind == "system" and principal.name == SELF_MONITOR.name


def dedupe_scope(principal: Principal, project_id: str | None) -> str | None:
    """The namespace a report dedupes in (None: the self-monitor's bare ``selfmon:`` keys)."""
    if is_self_monitor(principal):
        return None
    if project_id is not None:
        return f"project:{project_id}"
    return "principal:" + quote(principal.name, safe="")


def dedupe_key(scope: str | None, fingerprint: str) -> str:
    if scope is None:
        return fingerprint
    return f"{scope}|{fingerprint.removeprefix(scope + '|')}"


def _check_fingerprint(principal: Principal, fingerprint: str | None) -> None:
    reserved = SELF_MONITORING_PREFIX
    if fingerprint is not None and fingerprint.startswith(reserved) and not is_self_monitor(principal):
        raise InvalidInput(
            f"fingerprint: the prefix '{SELF_MONITORING_PREFIX}' is reserved for the monitor's "
            "own incidents; choose another fingerprint or omit it"
        )


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


_TEXT_FIELDS = (
    "title",
    "detail",
    "source",
    "event",
    "fingerprint",
    "risk_category",
    "project_id",
    "run_id",
    "session_id",
)


_SEAMS = (("title", "detail"), ("run_id", "session_id"))


def _redact(report: IncidentReport) -> tuple[IncidentReport, list[str]]:
    """Redact every free-text field; returns the clean report and the names of fields that changed."""
    changed: list[str] = []
    values: dict[str, Any] = {}  # the fields redaction changed, redacted
    for name in _TEXT_FIELDS:
        value = getattr(report, name)
        if isinstance(value, str):
            clean = redact_text(value)
            if clean != value:
                changed.append(name)
                values[name] = clean
    # A secret split between the free-text fields a reporter writes in sequence (redaction.redact_adjacent:
    # its limits are there). Identifying fields (source, event, project, fingerprint) and list items are
    # never joined: a neighbour's secret must not hide a source the routing and the key binding rely on.
    for pair in _SEAMS:
        current = [values.get(name, getattr(report, name)) for name in pair]
        if all(isinstance(value, str) and value for value in current):
            joined = redact_adjacent(current, [getattr(report, name) for name in pair])
            for name, before, value in zip(pair, current, joined, strict=True):
                if value != before:
                    changed.append(name)
                    values[name] = value
    for name in ("route_tags", "evidence_refs", "context"):
        value = getattr(report, name)
        clean = redact_json(value)  # a copy: the report is left as sent
        if clean != value:
            changed.append(name)
            values[name] = clean
    if not values:
        return report, []  # nothing to hide: no copy, no second validation
    return IncidentReport.model_validate({**report.model_dump(), **values}), sorted(set(changed), key=changed.index)


# Intake runs on every report, so its statements are Core, compiled once: the ORM's unit of work and
# model construction cost several times the rest of a report (benchmarks/, issue 6). The ones every
# report runs are Prepared (store/prepared.py): compiled once per dialect, run on the driver's cursor.
_INCIDENTS = table_of(Incident)
_DRAFTS = table_of(Draft)
_OCCURRENCES = table_of(IncidentOccurrence)
# A repeat needs its incident's latest draft too: joined here rather than read by a statement of its own.
_LATEST_DRAFT_ID = (
    select(_DRAFTS.c.draft_id)
    .where(_DRAFTS.c.incident_id == _INCIDENTS.c.incident_id)
    .order_by(_DRAFTS.c.created_at.desc())
    .limit(1)
    .correlate(_INCIDENTS)
    .scalar_subquery()
)
_LATEST = _DRAFTS.alias("latest")
_FOUND_COLUMNS = (
    _INCIDENTS.c.incident_id,
    _INCIDENTS.c.fingerprint,
    _INCIDENTS.c.status,
    _INCIDENTS.c.severity,
    _INCIDENTS.c.risk_level,
    _INCIDENTS.c.occurrence_count,
    _LATEST.c.draft_id.label("latest_draft_id"),
    _LATEST.c.status.label("latest_draft_status"),
)
_FOUND_FROM = _INCIDENTS.outerjoin(_LATEST, _LATEST.c.draft_id == _LATEST_DRAFT_ID)
_FIND_INCIDENT = Prepared(
    select(*_FOUND_COLUMNS).select_from(_FOUND_FROM).where(_INCIDENTS.c.fingerprint == bindparam("fingerprint"))
)


def _find_scoped_or_legacy(legacy: ColumnElement[bool]) -> Prepared:
    """The scope's incident, else one stored before scoping (its bare fingerprint) that is the scope's own: one
    statement, not two (a new incident is the common case, and it needs both answers)."""
    scoped = _INCIDENTS.c.fingerprint == bindparam("key")
    return Prepared(
        select(*_FOUND_COLUMNS)
        .select_from(_FOUND_FROM)
        .where(or_(scoped, and_(_INCIDENTS.c.fingerprint == bindparam("fingerprint"), legacy)))
        .order_by(case((scoped, 0), else_=1))  # the scoped incident first when both exist
        .limit(1)
    )


# Incidents stored before scoping hold the bare fingerprint: one counts only if it is the scope's own.
_FIND_SCOPED_OR_LEGACY_OF_PROJECT = _find_scoped_or_legacy(_INCIDENTS.c.project_id == bindparam("project_id"))
_FIND_SCOPED_OR_LEGACY_OF_REPORTER = _find_scoped_or_legacy(
    and_(_INCIDENTS.c.project_id.is_(None), _INCIDENTS.c.reported_by == bindparam("reported_by"))
)
_INCIDENT_ROW = select(_INCIDENTS).where(_INCIDENTS.c.incident_id == bindparam("incident_id"))


_INSERT_INCIDENT = Prepared.insert(_INCIDENTS)
_INSERT_DRAFT = Prepared.insert(_DRAFTS)
_INSERT_OCCURRENCE = Prepared.insert(_OCCURRENCES)


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


_SEEN_AGAIN = Prepared(_seen_again(reopen=False))
_SEEN_AGAIN_REOPENED = Prepared(_seen_again(reopen=True))
_RAISE_SEVERITY = (
    update(_INCIDENTS)
    .where(_INCIDENTS.c.incident_id == bindparam("target_id"))
    .values(severity=bindparam("severity"), risk_level=bindparam("risk_level"))
)
_UPDATE_DRAFT_EVIDENCE = (
    update(_DRAFTS)
    .where(_DRAFTS.c.draft_id == bindparam("target_id"))
    .values(
        status=DraftStatus.draft,
        severity=bindparam("severity"),
        body=bindparam("body"),
        route_tags=bindparam("route_tags"),
        evidence=bindparam("evidence"),
        evidence_digest=bindparam("evidence_digest"),
        revision=_DRAFTS.c.revision + 1,
        updated_at=bindparam("now"),
    )
)
_APPROVALS = table_of(ApprovalRequest)
_SUPERSEDE_APPROVALS = (
    update(_APPROVALS)
    .where(
        _APPROVALS.c.draft_id == bindparam("target_id"),
        _APPROVALS.c.status.in_([ApprovalStatus.pending, ApprovalStatus.approved]),
    )
    .values(status=ApprovalStatus.superseded)
)
# A draft in these states is on its way out (or out): a raised severity goes in a new draft instead.
_SENT_STATUSES = frozenset({DraftStatus.publishing, DraftStatus.published})


def _find(connection: Connection, scope: str | None, key: str, fingerprint: str, principal: Principal) -> Any:
    if scope is None or key == fingerprint:
        return _FIND_INCIDENT.first(connection, {"fingerprint": key})
    if scope.startswith("project:"):
        of_project = {"key": key, "fingerprint": fingerprint, "project_id": scope.removeprefix("project:")}
        return _FIND_SCOPED_OR_LEGACY_OF_PROJECT.first(connection, of_project)
    of_reporter = {"key": key, "fingerprint": fingerprint, "reported_by": principal.name}
    return _FIND_SCOPED_OR_LEGACY_OF_REPORTER.first(connection, of_reporter)


def _redraft_at_higher_severity(
    connection: Connection, draft_id: str, incident: Mapping[str, Any], now: datetime
) -> None:
    """The open draft takes the raised severity: new evidence, so back to draft and its approvals superseded."""
    current = connection.execute(select(_DRAFTS.c.evidence).where(_DRAFTS.c.draft_id == draft_id)).scalar_one()
    evidence = build_evidence(incident, current.get("triage") if isinstance(current, dict) else None)
    digest = evidence_digest(evidence)
    connection.execute(
        _UPDATE_DRAFT_EVIDENCE,
        {
            "target_id": draft_id,
            "severity": draft_severity(evidence),
            "body": render_body(evidence, digest),
            "route_tags": draft_route_tags(evidence),
            "evidence": evidence,
            "evidence_digest": digest,
            "now": now,
        },
    )
    connection.execute(_SUPERSEDE_APPROVALS, {"target_id": draft_id})


def new_draft(connection: Connection, incident: Mapping[str, Any], now: datetime) -> str:
    """Insert the draft of an incident's evidence; returns its draft_id."""
    evidence = build_evidence(incident)
    digest = evidence_digest(evidence)
    draft_id = new_id("drf")
    _INSERT_DRAFT.execute(
        connection,
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
    # The checks, redaction and fingerprint below touch no store: they run before the call takes the write turn
    # (defer_unit), beside other reports' commits rather than inside the batch they would hold up.
    with governed_call(monitor, principal, "report_incident", arguments, defer_unit=True) as call:
        # Sizes first, on the raw report: bounds the redaction work and names the caller's own field.
        _check_limits(report, monitor.config.limits)
        clean, redacted = _redact(report)
        call.run_id = clean.run_id  # only after redaction: the audit row must not carry a secret
        _check_noise(clean, monitor.config)
        if redacted:
            call.notes.append(f"redacted secrets in: {', '.join(redacted)}")
        check_project(monitor.config, clean.project_id)
        _check_fingerprint(principal, report.fingerprint)  # as sent: redaction must not hide the prefix
        level = clean.level.lower()
        severity, note = report_severity(monitor.config, principal, clean, severity_for(level, clean.risk_level))
        if note:
            call.notes.append(note)
        given = clean.fingerprint or compute_fingerprint(clean)
        scope = dedupe_scope(principal, clean.project_id)
        fingerprint = dedupe_key(scope, given)
        connection = call.connection()  # Core only: the call's ORM session is never made
        # BEGIN IMMEDIATE: the write lock is ours, so the row read here cannot change before commit, and times
        # taken from here on follow the order the reports are stored in (last_seen_at never goes back).
        now = monitor.clock()
        found = _find(connection, scope, fingerprint, given, principal)
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
            _INSERT_INCIDENT.execute(connection, incident)
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
            (_SEEN_AGAIN_REOPENED if recurrence else _SEEN_AGAIN).execute(
                connection,
                {"target_id": incident_id, "now": now, "run_id": clean.run_id, "session_id": clean.session_id},
            )
            occurrences = found.occurrence_count + 1
            fingerprint = found.fingerprint
            raised = severity.rank > Severity(stored_severity).rank
            if raised:
                # A repeat at a higher risk escalates: the incident, then its draft, take the new severity.
                risk_level = Severity.highest(found.risk_level, clean.risk_level) if clean.risk_level else None
                risk_level = risk_level or found.risk_level
                connection.execute(
                    _RAISE_SEVERITY, {"target_id": incident_id, "severity": severity, "risk_level": risk_level}
                )
                call.notes.append(f"severity raised from {Severity(stored_severity).value} to {severity.value}")
                stored_severity = severity
            draft_id, draft_status = found.latest_draft_id, found.latest_draft_status
            # A recurrence after publication, or an escalation of a draft already sent, needs a fresh draft;
            # an escalation of an unsent draft revises it (back to draft); otherwise the open draft stands.
            if (recurrence or raised) and (draft_id is None or draft_status in _SENT_STATUSES):
                row = connection.execute(_INCIDENT_ROW, {"incident_id": incident_id}).one()._asdict()
                draft_id, draft_status = new_draft(connection, row, now), DraftStatus.draft
            elif raised and draft_id is not None:
                row = connection.execute(_INCIDENT_ROW, {"incident_id": incident_id}).one()._asdict()
                _redraft_at_higher_severity(connection, draft_id, row, now)
                draft_status = DraftStatus.draft
                call.notes.append(f"draft {draft_id} revised; its open approvals superseded")
        _INSERT_OCCURRENCE.execute(
            connection,
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
