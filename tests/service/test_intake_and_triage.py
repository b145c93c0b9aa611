"""Intake (fingerprint, dedupe, noise, size caps, severity, redaction) and deterministic triage."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session
from sqlmodel import func, select

from incident_monitor.domain.enums import Decision, DraftStatus, IncidentStatus, Severity
from incident_monitor.domain.evidence import build_evidence, evidence_digest
from incident_monitor.domain.io import IncidentReport, ReportResult
from incident_monitor.domain.models import AuditEvent, Draft, Incident, IncidentOccurrence, TriageRun
from incident_monitor.errors import InvalidInput, ReportRejected
from incident_monitor.service import incidents, intake, publishing, triage
from incident_monitor.service.intake import compute_fingerprint, severity_for
from incident_monitor.service.monitor import Monitor
from support.monitors import AGENT, OPERATOR, FakeClock, MonitorFactory, flow_config

# Credential-shaped values are assembled at runtime so secret scanners do not flag this file.
GITHUB_PAT = "ghp_" + "A1b2C3d4E5" * 3 + "f6G7h8"
CONTEXT_PASSWORD = "canary-" + "Zq8xP2vL9mN4"


def report(**fields: Any) -> IncidentReport:
    values: dict[str, Any] = {
        "title": "Checkout smoke test failed",
        "detail": "POST /checkout returned 502",
        "source": "ci",
        "event": "ci.smoke.failed",
        "level": "warning",
    }
    values.update(fields)
    return IncidentReport(**values)


def send(monitor: Monitor, **fields: Any) -> ReportResult:
    return intake.report_incident(monitor, AGENT, report(**fields))


def counts(monitor: Monitor) -> dict[str, int]:
    with monitor.session() as session:
        return {
            table.__name__: session.exec(select(func.count()).select_from(table)).one()
            for table in (Incident, Draft, IncidentOccurrence, TriageRun)
        }


def last_audit(monitor: Monitor) -> AuditEvent:
    with monitor.session() as session:
        row = session.exec(select(AuditEvent).order_by(AuditEvent.seq.desc())).first()  # type: ignore[union-attr]
    assert row is not None
    return row


def draft_row(monitor: Monitor, draft_id: str | None) -> Draft:
    assert draft_id is not None
    with monitor.session() as session:
        draft = session.get(Draft, draft_id)
    assert draft is not None
    return draft


def incident_row(monitor: Monitor, incident_id: str) -> Incident:
    with monitor.session() as session:
        incident = session.get(Incident, incident_id)
    assert incident is not None
    return incident


# --- fingerprints ----------------------------------------------------------------------------------


def test_fingerprint_ignores_run_ids_session_ids_and_volatile_title_parts() -> None:
    first = report(title="Job 1234 failed on worker a3f9c2d1", run_id="run-1", session_id="s-1")
    second = report(title="Job 99 failed on worker 0bc77e12ff", run_id="run-2", session_id="s-2")
    third = report(title="job 7 FAILED   on worker 123e4567-e89b-12d3-a456-426614174000")

    assert compute_fingerprint(first) == compute_fingerprint(second) == compute_fingerprint(third)


@pytest.mark.parametrize(
    "change",
    [{"source": "cron"}, {"event": "ci.smoke.timeout"}, {"project_id": "billing"}, {"title": "Login test failed"}],
)
def test_fingerprint_differs_across_stable_fields(change: dict[str, str]) -> None:
    assert compute_fingerprint(report(**change)) != compute_fingerprint(report())


def test_reports_differing_only_in_volatile_parts_dedupe(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor()

    first = send(monitor, title="Job 1234 failed", run_id="run-1")
    second = send(monitor, title="Job 5678 failed", run_id="run-2")

    assert second.incident_id == first.incident_id
    assert second.fingerprint == first.fingerprint
    assert second.deduplicated is True


def test_explicit_fingerprint_is_used_as_given_within_the_reporters_scope(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor()

    first = send(monitor, title="Payment webhook rejected", fingerprint="payments/webhook-rejected")
    second = send(monitor, title="A completely different title", event="other.event", fingerprint=first.fingerprint)
    third = send(monitor, title="Yet another title", event="third.event", fingerprint="payments/webhook-rejected")

    # No project: scoped to the reporter; sending the returned (scoped) fingerprint back dedupes too.
    assert first.fingerprint == "principal:local-agent|payments/webhook-rejected"
    assert second.incident_id == third.incident_id == first.incident_id
    assert third.occurrence_count == 3


# --- dedupe ----------------------------------------------------------------------------------------


def test_dedupe_counts_the_occurrence_and_makes_no_new_draft(make_monitor: MonitorFactory, clock: FakeClock) -> None:
    monitor = make_monitor()
    first = send(monitor, run_id="run-1", session_id="s-1")
    first_seen = clock.now
    clock.advance(minutes=42)

    second = send(monitor, run_id="run-2", session_id="s-2")

    assert second.deduplicated is True and first.deduplicated is False
    assert second.recurrence is False
    assert second.incident_id == first.incident_id
    assert second.draft_id == first.draft_id
    assert second.occurrence_count == 2
    incident = incident_row(monitor, first.incident_id)
    assert incident.occurrence_count == 2
    assert incident.first_seen_at == first_seen
    assert incident.last_seen_at == clock.now
    assert incident.last_run_id == "run-2"
    assert incident.last_session_id == "s-2"
    assert counts(monitor) == {"Incident": 1, "Draft": 1, "IncidentOccurrence": 2, "TriageRun": 0}
    with monitor.session() as session:
        occurrences = session.exec(select(IncidentOccurrence).order_by(IncidentOccurrence.seen_at)).all()
    assert [o.run_id for o in occurrences] == ["run-1", "run-2"]
    assert [o.seen_at for o in occurrences] == [first_seen, clock.now]


# --- noise -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"event": "x.heartbeat"}, "event 'x.heartbeat' ends in 'heartbeat'"),
        ({"event": "job.progress"}, "event 'job.progress' ends in 'progress'"),
        ({"event": "task.started"}, "event 'task.started' ends in 'started'"),
        ({"level": "debug"}, "level 'debug'"),
        ({"level": "DEBUG"}, "level 'debug'"),
    ],
)
def test_noise_is_rejected_nothing_stored_but_audited(
    make_monitor: MonitorFactory, fields: dict[str, str], why: str
) -> None:
    monitor = make_monitor()
    send(monitor, title="A real failure", event="real.failed")  # the tables are not empty before
    before = counts(monitor)

    with pytest.raises(ReportRejected) as caught:
        send(monitor, **fields)

    assert "routine noise" in caught.value.message
    assert why in caught.value.message
    assert counts(monitor) == before
    row = last_audit(monitor)
    assert (row.action, row.decision) == ("report_incident", Decision.rejected)
    assert any(why in reason for reason in row.reasons)


def test_noise_suffix_must_be_a_whole_segment(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor()

    result = send(monitor, event="job.restarted_too_often")

    assert result.deduplicated is False


# --- size caps -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "limit_key"),
    [
        ({"title": "t" * 301}, "title:", "limits.max_title_chars"),
        ({"detail": "d" * 20_001}, "detail:", "limits.max_detail_chars"),
        ({"evidence_refs": [f"https://ci.example/run/{i}" for i in range(51)]}, "evidence_refs:", "max_evidence_refs"),
        ({"evidence_refs": ["https://logs.example/" + "x" * 2_000]}, "evidence_refs[0]:", "max_evidence_ref_chars"),
        ({"route_tags": ["ok", "t" * 201]}, "route_tags[1]:", "limits.max_field_chars"),
        ({"context": {"blob": "c" * 20_001}}, "context:", "limits.max_detail_chars"),
    ],
)
def test_size_caps_name_the_field_and_the_limit_key(
    make_monitor: MonitorFactory, fields: dict[str, Any], field: str, limit_key: str
) -> None:
    monitor = make_monitor()
    before = counts(monitor)

    with pytest.raises(InvalidInput) as caught:
        send(monitor, **fields)

    assert field in caught.value.message
    assert limit_key in caught.value.message
    assert counts(monitor) == before
    assert last_audit(monitor).decision == Decision.rejected


def test_too_many_route_tags_names_the_limit_key(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor()

    with pytest.raises(InvalidInput) as caught:
        send(monitor, route_tags=[f"tag-{i}" for i in range(21)])

    assert "route_tags:" in caught.value.message
    assert "limits.max_route_tags" in caught.value.message


def test_configured_limits_apply(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config(limits={"max_title_chars": 20}))

    with pytest.raises(InvalidInput) as caught:
        send(monitor, title="twenty-one characters")

    assert "21 characters, limit 20 (limits.max_title_chars)" in caught.value.message


def test_unknown_level_is_refused_with_the_known_ones(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor()

    with pytest.raises(InvalidInput) as caught:
        send(monitor, level="catastrophic")

    assert "level:" in caught.value.message
    assert "critical, error, warning, info" in caught.value.message
    assert counts(monitor)["Incident"] == 0


# --- severity --------------------------------------------------------------------------------------

LEVEL_BASE = {"critical": "critical", "fatal": "critical", "error": "high", "warning": "medium", "info": "low"}


@pytest.mark.parametrize("level", list(LEVEL_BASE))
@pytest.mark.parametrize("risk_level", [None, *Severity])
def test_severity_is_the_higher_of_level_and_risk_level(level: str, risk_level: Severity | None) -> None:
    base = Severity(LEVEL_BASE[level])
    expected = base if risk_level is None or risk_level.rank <= base.rank else risk_level

    assert severity_for(level, risk_level) is expected


@pytest.mark.parametrize(
    ("level", "risk_level", "expected"),
    [
        ("WARNING", None, Severity.medium),
        ("warn", Severity.critical, Severity.critical),
        ("error", Severity.low, Severity.high),
        ("info", Severity.high, Severity.high),
    ],
)
def test_reported_severity_is_stored(
    make_monitor: MonitorFactory, level: str, risk_level: Severity | None, expected: Severity
) -> None:
    monitor = make_monitor()

    result = send(monitor, level=level, risk_level=risk_level)

    assert result.severity is expected
    assert incident_row(monitor, result.incident_id).severity is expected
    assert draft_row(monitor, result.draft_id).severity is expected


# --- redaction -------------------------------------------------------------------------------------


def test_secrets_are_redacted_before_storage(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor()

    result = send(
        monitor,
        title=f"Deploy failed with token {GITHUB_PAT}",
        detail=f"git clone https://x-access-token:{GITHUB_PAT}@github.com/acme/shop failed",
        context={"password": CONTEXT_PASSWORD, "attempt": 3},
        evidence_refs=[f"https://ci.example/logs?token={GITHUB_PAT}", "https://ci.example/run/7"],
    )

    assert set(result.redacted_fields) == {"title", "detail", "context", "evidence_refs"}
    incident = incident_row(monitor, result.incident_id)
    draft = draft_row(monitor, result.draft_id)
    stored = json.dumps(
        [incident.model_dump(mode="json"), draft.model_dump(mode="json")],
    )
    assert GITHUB_PAT not in stored
    assert CONTEXT_PASSWORD not in stored
    assert "[REDACTED]" in incident.title
    assert incident.context["attempt"] == 3  # ordinary values survive
    assert "https://ci.example/run/7" in incident.evidence_refs


def test_clean_report_lists_no_redacted_fields(make_monitor: MonitorFactory) -> None:
    assert send(make_monitor()).redacted_fields == []


# --- evidence digest -------------------------------------------------------------------------------


def test_evidence_digest_is_canonical_and_ignores_volatile_ids(make_monitor: MonitorFactory, clock: FakeClock) -> None:
    monitor = make_monitor()
    first = send(monitor, run_id="run-1")
    draft = draft_row(monitor, first.draft_id)
    incident = incident_row(monitor, first.incident_id)

    assert draft.evidence_digest == evidence_digest(build_evidence(incident))
    assert draft.evidence_digest.startswith("sha256:")

    clock.advance(minutes=5)
    send(monitor, run_id="run-2", session_id="other")  # a repeat: new run ids, counts and timestamps

    assert draft_row(monitor, first.draft_id).evidence_digest == draft.evidence_digest
    assert evidence_digest(build_evidence(incident_row(monitor, first.incident_id))) == draft.evidence_digest


def test_same_evidence_in_two_monitors_gives_the_same_digest(make_monitor: MonitorFactory, tmp_path: Any) -> None:
    one = make_monitor(data_dir=tmp_path / "one")
    two = make_monitor(data_dir=tmp_path / "two")

    a = send(one, run_id="run-a", fingerprint="fp-1")
    b = send(two, run_id="run-b", fingerprint="fp-1")

    assert a.incident_id != b.incident_id
    assert draft_row(one, a.draft_id).evidence_digest == draft_row(two, b.draft_id).evidence_digest


def test_triage_twice_without_changes_keeps_the_digest(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor()
    result = send(monitor)
    assert result.draft_id is not None
    original = draft_row(monitor, result.draft_id).evidence_digest

    first = triage.triage_draft(monitor, AGENT, result.draft_id)
    second = triage.triage_draft(monitor, AGENT, result.draft_id)

    # The first run adds its conclusions to the evidence; the second finds nothing new.
    assert first.evidence_changed is True
    assert first.evidence_digest != original
    assert second.evidence_changed is False
    assert second.evidence_digest == first.evidence_digest
    assert first.triage_run.triage_run_id != second.triage_run.triage_run_id
    assert draft_row(monitor, result.draft_id).revision == 2
    assert first.triage_run.triage_run_id not in json.dumps(draft_row(monitor, result.draft_id).evidence)


# --- triage ----------------------------------------------------------------------------------------


def test_triage_is_deterministic_and_persisted(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor()
    send(monitor, title="Database connection timeout in checkout service!")
    target = send(monitor, title="Database connection timeout in checkout service")
    assert target.draft_id is not None

    first = triage.triage_draft(monitor, AGENT, target.draft_id)
    second = triage.triage_draft(monitor, AGENT, target.draft_id)

    assert first.triage_run.findings == second.triage_run.findings
    assert first.triage_run.duplicate_matches == second.triage_run.duplicate_matches
    assert first.triage_run.suggested_severity == second.triage_run.suggested_severity
    with monitor.session() as session:
        runs = session.exec(select(TriageRun).where(TriageRun.draft_id == target.draft_id)).all()
    assert {r.triage_run_id for r in runs} == {first.triage_run.triage_run_id, second.triage_run.triage_run_id}
    assert all(r.created_by == AGENT.name for r in runs)


def test_triage_finds_a_duplicate_and_a_similar_incident(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor()
    duplicate = send(monitor, title="Database connection timeout in checkout service!")
    similar = send(monitor, title="Database connection timeout in checkout service", event="db.pool.exhausted")
    unrelated = send(monitor, title="Logo renders blurry on retina screens", event="ui.render")
    target = send(monitor, title="Database connection timeout in checkout service")
    assert len({duplicate.incident_id, similar.incident_id, target.incident_id}) == 3
    assert target.draft_id is not None

    result = triage.triage_draft(monitor, AGENT, target.draft_id)

    run = result.triage_run
    assert [m["incident_id"] for m in run.duplicate_matches] == [duplicate.incident_id]
    assert run.duplicate_matches[0]["same_event"] is True
    assert [m["incident_id"] for m in run.similar_incidents] == [similar.incident_id]
    assert run.similar_incidents[0]["same_event"] is False
    assert any(f.startswith(f"possible duplicate of {duplicate.incident_id}") for f in run.findings)
    assert any(f.startswith(f"similar to {similar.incident_id}") for f in run.findings)
    assert unrelated.incident_id not in json.dumps(run.model_dump(mode="json"))
    assert draft_row(monitor, target.draft_id).evidence["triage"]["duplicate_of"] == [duplicate.incident_id]


def test_triage_moves_the_incident_from_open_to_triaged(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor()
    result = send(monitor)
    assert result.status is IncidentStatus.open
    assert result.draft_id is not None

    triage.triage_draft(monitor, AGENT, result.draft_id)

    assert incident_row(monitor, result.incident_id).status is IncidentStatus.triaged


def test_a_recurrence_is_found_raised_and_tagged(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor()
    first = send(monitor, level="warning")
    incidents.resolve_incident(monitor, OPERATOR, first.incident_id, "restarted the pool")

    again = send(monitor, level="warning")

    assert again.recurrence is True
    assert again.status is IncidentStatus.open
    assert again.incident_id == first.incident_id
    assert incident_row(monitor, first.incident_id).recurrence_count == 1
    assert again.draft_id is not None
    result = triage.triage_draft(monitor, AGENT, again.draft_id)
    run = result.triage_run
    assert any(f.startswith("recurrence:") for f in run.findings)
    assert run.suggested_severity.rank >= Severity.high.rank
    assert "recurring" in run.suggested_route_tags
    draft = draft_row(monitor, again.draft_id)
    assert draft.severity.rank >= Severity.high.rank
    assert "recurring" in draft.route_tags


@pytest.mark.anyio
async def test_triage_of_a_published_draft_records_a_run_but_keeps_its_evidence(
    make_monitor: MonitorFactory,
) -> None:
    monitor = make_monitor()  # a medium report goes to the telemetry default, which needs no approval
    result = send(monitor)
    assert result.draft_id is not None
    published = await publishing.publish_draft(monitor, AGENT, result.draft_id)
    assert published.draft_status is DraftStatus.published
    before = draft_row(monitor, result.draft_id)
    runs_before = counts(monitor)["TriageRun"]

    outcome = triage.triage_draft(monitor, AGENT, result.draft_id)

    after = draft_row(monitor, result.draft_id)
    assert outcome.evidence_changed is False
    assert outcome.draft_status is DraftStatus.published
    assert (after.evidence_digest, after.revision, after.evidence) == (
        before.evidence_digest,
        before.revision,
        before.evidence,
    )
    assert after.evidence_digest == published.receipt.evidence_digest
    assert counts(monitor)["TriageRun"] == runs_before + 1


def test_a_report_makes_no_orm_session_and_stores_its_effect_with_its_audit_row(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor()
    # Intake runs Core statements only (the unit of work makes its ORM session on first use, store/group_commit.py).
    sessions: list[object] = []

    def began(session: object, *_: object) -> None:
        sessions.append(session)

    event.listen(Session, "after_begin", began)
    try:
        first = send(monitor)
        again = send(monitor)
    finally:
        event.remove(Session, "after_begin", began)
    assert sessions == []
    assert again.deduplicated and again.incident_id == first.incident_id and again.occurrence_count == 2
    assert counts(monitor) == {"Incident": 1, "Draft": 1, "IncidentOccurrence": 2, "TriageRun": 0}
    audit = last_audit(monitor)
    assert audit.action == "report_incident" and audit.subject_id == first.incident_id


def _stored_before_scoping(monitor: Monitor, result: ReportResult, bare: str, **columns: str | None) -> None:
    """Turn a stored incident into one written before scoping: its bare fingerprint (and the given columns)."""
    with monitor.session() as session:
        incident = session.get(Incident, result.incident_id)
        assert incident is not None
        incident.fingerprint = bare
        for name, value in columns.items():
            setattr(incident, name, value)
        session.add(incident)


PROJECT_CONFIG = flow_config(projects=[{"id": "shop"}, {"id": "blog"}])


def test_an_incident_stored_before_scoping_is_found_by_its_own_project_only(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(PROJECT_CONFIG)
    legacy = send(monitor, project_id="shop", fingerprint="fp_checkout")
    _stored_before_scoping(monitor, legacy, "fp_checkout")
    again = send(monitor, project_id="shop", fingerprint="fp_checkout")
    assert again.deduplicated and again.incident_id == legacy.incident_id and again.fingerprint == "fp_checkout"
    other = send(monitor, project_id="blog", fingerprint="fp_checkout")
    assert not other.deduplicated and other.fingerprint == "project:blog|fp_checkout"


def test_the_scoped_incident_wins_over_one_stored_before_scoping(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(PROJECT_CONFIG)
    legacy = send(monitor, project_id="shop", fingerprint="fp_a")
    _stored_before_scoping(monitor, legacy, "fp_checkout")
    scoped = send(monitor, project_id="shop", fingerprint="fp_b")
    _stored_before_scoping(monitor, scoped, "project:shop|fp_checkout")
    again = send(monitor, project_id="shop", fingerprint="fp_checkout")
    assert again.deduplicated and again.incident_id == scoped.incident_id


def test_an_incident_stored_before_scoping_without_a_project_is_its_reporters_only(
    make_monitor: MonitorFactory,
) -> None:
    monitor = make_monitor(PROJECT_CONFIG)
    legacy = send(monitor, fingerprint="fp_login")
    _stored_before_scoping(monitor, legacy, "fp_login")
    again = send(monitor, fingerprint="fp_login")
    assert again.deduplicated and again.incident_id == legacy.incident_id
    _stored_before_scoping(monitor, legacy, "fp_login", reported_by="someone-else")
    mine = send(monitor, fingerprint="fp_login")
    assert not mine.deduplicated and mine.incident_id != legacy.incident_id
