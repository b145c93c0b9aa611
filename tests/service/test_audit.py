"""The audit log: one row per governed call, a hash chain that shows tampering, no secrets, one chain."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlmodel import func, select

from incident_monitor.domain.enums import Decision, Severity
from incident_monitor.domain.io import IncidentReport
from incident_monitor.domain.models import ApprovalRequest, AuditEvent, Draft, Incident, Receipt, TriageRun
from incident_monitor.errors import (
    ApprovalRequired,
    InvalidInput,
    MonitorError,
    NotFound,
    PermissionDenied,
    PublishBlocked,
    ReportRejected,
)
from incident_monitor.service import (
    approvals,
    audit_queries,
    incidents,
    intake,
    publishing,
    queries,
    route_preview,
    status,
    triage,
)
from incident_monitor.service.audit_chain import GENESIS_HASH, SYSTEM_PRINCIPAL, read_chain_rows, read_rows
from incident_monitor.service.audit_checkpoints import verify_audit_log
from incident_monitor.service.monitor import Monitor
from incident_monitor.store.engine import DATABASE_FILENAME
from support.databases import raw_sql
from support.monitors import AGENT, OPERATOR, MonitorFactory, flow_config, principal

# Credential-shaped canaries are assembled at runtime so secret scanners do not flag this file.
GITHUB_PAT = "ghp_" + "A1b2C3d4E5" * 3 + "f6G7h8"
PASSWORD_CANARY = "canary-" + "Wq7zR2xK9vB4"

READER = principal("reader", "read")


def report(**fields: Any) -> IncidentReport:
    values: dict[str, Any] = {"title": "Checkout smoke failed", "source": "ci", "event": "ci.smoke.failed"}
    values.update(fields)
    return IncidentReport(**values)


def audit_rows(monitor: Monitor) -> list[AuditEvent]:
    with monitor.session() as session:
        return list(session.exec(select(AuditEvent).order_by(AuditEvent.seq)).all())  # type: ignore[arg-type]


def effects(monitor: Monitor) -> dict[str, int]:
    with monitor.session() as session:
        return {
            table.__name__: session.exec(select(func.count()).select_from(table)).one()
            for table in (Incident, Draft, TriageRun, ApprovalRequest, Receipt)
        }


def database(monitor: Monitor) -> Path:
    return monitor.data_dir / DATABASE_FILENAME


def tamper(monitor: Monitor, sql: str, *params: Any) -> None:
    """Edit the database behind the service's back, as someone with file access would."""
    raw_sql(monitor, (sql, params))


def verify(monitor: Monitor) -> Any:
    with monitor.session() as session:
        return verify_audit_log(monitor, session)


# --- one row per governed call ---------------------------------------------------------------------


@dataclass
class Setup:
    monitor: Monitor
    incident_id: str
    draft_id: str  # medium, routed to the telemetry default: needs no approval
    webhook_draft_id: str  # routed to the webhook, which is not ready (no secret in the environment)


@dataclass(frozen=True)
class Case:
    action: str
    decision: Decision
    call: Callable[[Setup], Any]
    raises: type[MonitorError] | None = None
    changes: frozenset[str] = frozenset()  # the tables the call adds rows to


CASES: dict[str, Case] = {
    "report allow": Case(
        "report_incident",
        Decision.allow,
        lambda s: intake.report_incident(s.monitor, AGENT, report(title="Login smoke failed")),
        changes=frozenset({"Incident", "Draft"}),
    ),
    "report dedupe allow": Case(
        "report_incident", Decision.allow, lambda s: intake.report_incident(s.monitor, AGENT, report(level="warning"))
    ),
    "report deny": Case(
        "report_incident",
        Decision.deny,
        lambda s: intake.report_incident(s.monitor, READER, report(title="Login smoke failed")),
        raises=PermissionDenied,
    ),
    "report noise": Case(
        "report_incident",
        Decision.rejected,
        lambda s: intake.report_incident(s.monitor, AGENT, report(event="ci.heartbeat")),
        raises=ReportRejected,
    ),
    "report too big": Case(
        "report_incident",
        Decision.rejected,
        lambda s: intake.report_incident(s.monitor, AGENT, report(title="x" * 400)),
        raises=InvalidInput,
    ),
    "status": Case("get_status", Decision.allow, lambda s: status.get_status(s.monitor, AGENT)),
    "list incidents": Case("list_incidents", Decision.allow, lambda s: queries.list_incidents(s.monitor, AGENT)),
    "list incidents bad limit": Case(
        "list_incidents",
        Decision.rejected,
        lambda s: queries.list_incidents(s.monitor, AGENT, limit=0),
        raises=InvalidInput,
    ),
    "get draft missing": Case(
        "get_draft",
        Decision.rejected,
        lambda s: queries.get_draft(s.monitor, AGENT, "drf_" + "0" * 16),
        raises=NotFound,
    ),
    "get draft malformed id": Case(
        "get_draft", Decision.rejected, lambda s: queries.get_draft(s.monitor, AGENT, "drf_nope"), raises=InvalidInput
    ),
    "preview": Case(
        "preview_route", Decision.allow, lambda s: route_preview.preview_route(s.monitor, AGENT, level="error")
    ),
    "preview deny": Case(
        "preview_route",
        Decision.deny,
        lambda s: route_preview.preview_route(s.monitor, READER, level="error"),
        raises=PermissionDenied,
    ),
    "triage": Case(
        "triage_draft",
        Decision.allow,
        lambda s: triage.triage_draft(s.monitor, AGENT, s.draft_id),
        changes=frozenset({"TriageRun"}),
    ),
    "request approval": Case(
        "request_approval",
        Decision.allow,
        lambda s: approvals.request_approval(s.monitor, AGENT, s.draft_id, "please review"),
        changes=frozenset({"ApprovalRequest"}),
    ),
    "request approval blocked": Case(
        "request_approval",
        Decision.deny,
        lambda s: approvals.request_approval(s.monitor, AGENT, s.webhook_draft_id, "please review"),
        raises=PublishBlocked,
    ),
    "agent cannot approve": Case(
        "decide_approval",
        Decision.deny,
        lambda s: approvals.decide_approval(s.monitor, AGENT, "apr_x", "approve", "self-service"),
        raises=PermissionDenied,
    ),
    "resolve": Case(
        "resolve_incident",
        Decision.allow,
        lambda s: incidents.resolve_incident(s.monitor, OPERATOR, s.incident_id, "fixed"),
    ),
    "resolve empty note": Case(
        "resolve_incident",
        Decision.rejected,
        lambda s: incidents.resolve_incident(s.monitor, OPERATOR, s.incident_id, "   "),
        raises=InvalidInput,
    ),
    "publish blocked": Case(
        "publish_draft",
        Decision.deny,
        lambda s: anyio.run(publishing.publish_draft, s.monitor, AGENT, s.webhook_draft_id),
        raises=PublishBlocked,
        changes=frozenset({"Receipt"}),  # a publish the gates stopped leaves a blocked receipt
    ),
    "verify audit deny": Case(
        "verify_audit", Decision.deny, lambda s: audit_queries.verify_audit(s.monitor, AGENT), raises=PermissionDenied
    ),
    "verify audit": Case("verify_audit", Decision.allow, lambda s: audit_queries.verify_audit(s.monitor, OPERATOR)),
}


@pytest.fixture
def setup(make_monitor: MonitorFactory, monkeypatch: pytest.MonkeyPatch) -> Setup:
    monkeypatch.delenv("INCIDENT_MONITOR_WEBHOOK_SECRET", raising=False)
    # Self-monitoring off: each call's own rows are counted (its incidents: tests/service/test_self_monitoring.py).
    monitor = make_monitor(flow_config(self_monitoring={"enabled": False}))
    first = intake.report_incident(monitor, AGENT, report(level="warning"))
    webhook = intake.report_incident(monitor, AGENT, report(title="Deploy failed", route_tags=["runtime-failure"]))
    assert first.draft_id is not None and webhook.draft_id is not None
    return Setup(monitor, first.incident_id, first.draft_id, webhook.draft_id)


@pytest.mark.parametrize("name", list(CASES))
def test_every_governed_call_writes_exactly_one_row(setup: Setup, name: str) -> None:
    case = CASES[name]
    rows_before = audit_rows(setup.monitor)
    effects_before = effects(setup.monitor)

    if case.raises is None:
        case.call(setup)
    else:
        with pytest.raises(case.raises):
            case.call(setup)

    # The chain's own rows (a checkpoint written, a key rotated) are the monitor's, not the call's.
    new_rows = [r for r in audit_rows(setup.monitor)[len(rows_before) :] if r.principal != SYSTEM_PRINCIPAL]
    assert [(r.action, r.decision) for r in new_rows] == [(case.action, case.decision)]
    assert new_rows[0].reasons, "every decision says why"
    effects_after = effects(setup.monitor)
    grown = {table for table, n in effects_after.items() if n != effects_before[table]}
    assert grown == case.changes
    if case.decision is Decision.deny and case.raises is PermissionDenied:
        assert "lacks scope" in new_rows[0].reasons[0]


def test_an_allowed_row_names_its_effect(setup: Setup) -> None:
    result = intake.report_incident(setup.monitor, AGENT, report(title="Login smoke failed", run_id="run-77"))

    row = audit_rows(setup.monitor)[-1]
    assert row.subject_id == result.incident_id
    assert row.run_id == "run-77"
    assert row.principal == AGENT.name
    assert "new incident" in row.reasons


@pytest.mark.anyio
async def test_a_publish_records_its_decision_and_its_outcome(setup: Setup) -> None:
    before = len(audit_rows(setup.monitor))

    result = await publishing.publish_draft(setup.monitor, AGENT, setup.draft_id)

    new_rows = audit_rows(setup.monitor)[before:]
    assert [(r.action, r.decision) for r in new_rows] == [
        ("publish_draft", Decision.allow),
        ("publish_draft.outcome", Decision.allow),
    ]
    assert all(r.subject_id == setup.draft_id for r in new_rows)
    assert f"receipt {result.receipt.receipt_id} published" in new_rows[1].reasons


@pytest.mark.anyio
async def test_publish_needing_approval_writes_one_approval_required_row(
    make_monitor: MonitorFactory, webhook_secret: str
) -> None:
    monitor = make_monitor(flow_config())
    result = intake.report_incident(monitor, AGENT, report(route_tags=["runtime-failure"]))
    assert result.draft_id is not None
    before = len(audit_rows(monitor))

    with pytest.raises(ApprovalRequired):
        await publishing.publish_draft(monitor, AGENT, result.draft_id)

    assert [(r.action, r.decision) for r in audit_rows(monitor)[before:]] == [
        ("publish_draft", Decision.approval_required)
    ]


# --- the hash chain --------------------------------------------------------------------------------


def busy_monitor(make_monitor: MonitorFactory) -> Monitor:
    """A log with allows, denials and rejections in it (and no self-monitoring rows, to count exactly)."""
    monitor = make_monitor(flow_config(self_monitoring={"enabled": False}))
    for i, title in enumerate(["Checkout failed", "Login failed", "Search failed", "Cart failed"]):
        intake.report_incident(monitor, AGENT, report(title=title, run_id=f"run-{i}"))
    with pytest.raises(PermissionDenied):
        intake.report_incident(monitor, READER, report())
    with pytest.raises(ReportRejected):
        intake.report_incident(monitor, AGENT, report(level="debug"))
    queries.list_incidents(monitor, AGENT)
    return monitor


def test_rows_chain_and_verify(make_monitor: MonitorFactory) -> None:
    monitor = busy_monitor(make_monitor)

    rows = audit_rows(monitor)
    result = verify(monitor)

    assert len(rows) == 7
    assert [r.seq for r in rows] == list(range(1, 8))
    assert rows[0].prev_hash == GENESIS_HASH
    for previous, row in itertools.pairwise(rows):
        assert row.prev_hash == previous.hash
    assert len({r.hash for r in rows}) == len(rows)
    assert result.ok is True
    assert result.events_checked == len(rows)
    assert result.head_hash == rows[-1].hash
    assert result.first_broken_seq is None


def test_empty_log_verifies(make_monitor: MonitorFactory) -> None:
    result = verify(make_monitor(flow_config()))

    assert (result.ok, result.events_checked, result.head_hash) == (True, 0, None)


def test_verify_audit_service_reports_the_chain(make_monitor: MonitorFactory) -> None:
    monitor = busy_monitor(make_monitor)

    result = audit_queries.verify_audit(monitor, OPERATOR)

    assert result.ok is True
    assert result.events_checked == 7  # its own row is written after the check


TAMPERED_FIELDS: list[tuple[str, Any]] = [
    ("principal", "mallory"),
    ("action", "get_status"),
    ("decision", "deny"),
    ("reasons", '["nothing to see here"]'),
    ("arguments_digest", "sha256:" + "0" * 64),
    ("subject_id", "inc_forged"),
    ("run_id", "run-forged"),
    ("at", "2020-01-01 00:00:00.000000"),
    ("hash", "f" * 64),
]


@pytest.mark.parametrize(("column", "value"), TAMPERED_FIELDS, ids=[c for c, _ in TAMPERED_FIELDS])
def test_modifying_any_field_breaks_the_chain_at_that_row(
    make_monitor: MonitorFactory, column: str, value: Any
) -> None:
    monitor = busy_monitor(make_monitor)

    tamper(monitor, f"UPDATE audit_events SET {column} = ? WHERE seq = 3", value)  # noqa: S608 - fixed names

    result = verify(monitor)
    assert result.ok is False
    assert result.first_broken_seq == 3
    assert result.events_checked == 2
    assert result.problem is not None and "modified" in result.problem


def test_modifying_a_row_through_the_orm_breaks_the_chain(make_monitor: MonitorFactory) -> None:
    monitor = busy_monitor(make_monitor)

    with monitor.session() as session:
        row = session.get(AuditEvent, 5)
        assert row is not None
        row.reasons = [*row.reasons, "approved by the CEO"]
        session.add(row)

    result = verify(monitor)
    assert (result.ok, result.first_broken_seq) == (False, 5)
    assert result.problem is not None and "modified" in result.problem


def test_rewriting_prev_hash_is_caught_at_that_row(make_monitor: MonitorFactory) -> None:
    monitor = busy_monitor(make_monitor)

    tamper(monitor, "UPDATE audit_events SET prev_hash = ? WHERE seq = 4", "e" * 64)

    result = verify(monitor)
    assert (result.ok, result.first_broken_seq) == (False, 4)


def test_deleting_a_middle_row_is_caught_after_the_gap(make_monitor: MonitorFactory) -> None:
    monitor = busy_monitor(make_monitor)

    tamper(monitor, "DELETE FROM audit_events WHERE seq = 4")

    result = verify(monitor)
    assert result.ok is False
    assert result.first_broken_seq == 5
    assert result.problem is not None and "removed or reordered" in result.problem


def test_swapping_two_rows_is_caught(make_monitor: MonitorFactory) -> None:
    monitor = busy_monitor(make_monitor)
    raw_sql(
        monitor,
        "UPDATE audit_events SET seq = 100 WHERE seq = 2",
        "UPDATE audit_events SET seq = 2 WHERE seq = 3",
        "UPDATE audit_events SET seq = 3 WHERE seq = 100",
    )

    result = verify(monitor)
    assert (result.ok, result.first_broken_seq) == (False, 2)


# --- no secrets ------------------------------------------------------------------------------------


def dump_audit(monitor: Monitor) -> str:
    return repr(raw_sql(monitor, "SELECT * FROM audit_events"))


def test_audit_rows_never_hold_a_reported_secret(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config())
    secret_report = report(
        title=f"Deploy failed: token {GITHUB_PAT}",
        detail=f"Authorization: Bearer {GITHUB_PAT}",
        context={"password": PASSWORD_CANARY, "env": {"GITHUB_TOKEN": GITHUB_PAT}},
        evidence_refs=[f"https://ci.example/logs?access_token={GITHUB_PAT}"],
        run_id=f"run-{GITHUB_PAT}",  # the audit row carries run_id, so it must be the redacted one
    )

    result = intake.report_incident(monitor, AGENT, secret_report)
    # The same secrets in reports that are denied, rejected as noise and rejected as too big.
    with pytest.raises(PermissionDenied):
        intake.report_incident(monitor, READER, secret_report)
    with pytest.raises(ReportRejected):
        intake.report_incident(monitor, AGENT, secret_report.model_copy(update={"event": f"{GITHUB_PAT}.heartbeat"}))
    with pytest.raises(InvalidInput):
        intake.report_incident(monitor, AGENT, secret_report.model_copy(update={"detail": GITHUB_PAT * 1_000}))

    assert set(result.redacted_fields) >= {"title", "detail", "context", "evidence_refs"}
    text = dump_audit(monitor)
    assert "report_incident" in text
    assert GITHUB_PAT not in text
    assert PASSWORD_CANARY not in text
    # Nothing else stored it either: the canaries are in no byte of the database files.
    for path in monitor.data_dir.glob(DATABASE_FILENAME + "*"):
        raw = path.read_bytes()
        assert GITHUB_PAT.encode() not in raw, path.name
        assert PASSWORD_CANARY.encode() not in raw, path.name


@pytest.mark.parametrize("surface", ["report_incident", "preview_route"])
def test_a_secret_in_an_invalid_level_does_not_reach_the_audit_log(make_monitor: MonitorFactory, surface: str) -> None:
    monitor = make_monitor(flow_config())

    with pytest.raises(InvalidInput):
        if surface == "report_incident":
            intake.report_incident(monitor, AGENT, report(level=GITHUB_PAT))
        else:
            route_preview.preview_route(monitor, AGENT, level=GITHUB_PAT, risk_level=Severity.low)

    assert GITHUB_PAT not in dump_audit(monitor)


# --- one chain across processes --------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from incident_monitor.config import MonitorConfig
    from incident_monitor.domain.io import IncidentReport
    from incident_monitor.policy.principal import Principal
    from incident_monitor.service.intake import report_incident
    from incident_monitor.service.monitor import Monitor

    data_dir, worker, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    # One project: dedupe is scoped by project, so both workers' reports share its incidents.
    monitor = Monitor.open(config=MonitorConfig.model_validate({"projects": [{"id": "shop"}]}), data_dir=data_dir)
    reporter = Principal(name=f"worker-{worker}", scopes=frozenset({"incident_monitor:report"}))
    for i in range(count):
        # Three shared fingerprints: both workers insert and dedupe into the same incidents.
        report = IncidentReport(
            title=f"Worker failure {i % 3}", source="ci", event="ci.failed", fingerprint=f"fp-{i % 3}",
            project_id="shop", run_id=f"{worker}-{i}",
        )
        report_incident(monitor, reporter, report)
    monitor.close()
    """
)


def test_two_processes_appending_at_once_keep_one_chain(make_monitor: MonitorFactory, tmp_path: Path) -> None:
    data_dir = tmp_path / "shared"
    monitor = make_monitor(flow_config(), data_dir=data_dir)  # creates the schema before the race
    per_worker = 30

    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(data_dir), name, str(per_worker)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr

    everything = audit_rows(monitor)
    result = verify(monitor)
    assert result.ok is True, result.problem
    assert result.events_checked == len(everything)
    # Besides the calls' rows, each worker's close wrote a checkpoint (a row of the monitor's own).
    rows = [r for r in everything if r.principal != SYSTEM_PRINCIPAL]
    assert len(rows) == 2 * per_worker
    assert all((r.action, r.decision) == ("report_incident", Decision.allow) for r in rows)
    assert {r.principal for r in rows} == {"worker-a", "worker-b"}
    with monitor.session() as session:
        incidents_ = session.exec(select(Incident)).all()
    assert len(incidents_) == 3
    assert sum(i.occurrence_count for i in incidents_) == 2 * per_worker


def test_the_chain_check_reads_the_same_rows_as_the_orm(make_monitor: MonitorFactory) -> None:
    # verify_audit_log walks Core rows (audit_chain.read_chain_rows): the same values the ORM loads, so the
    # same hashes; a denial and a report give rows with reasons, subjects and run ids.
    monitor = make_monitor(flow_config())
    intake.report_incident(monitor, AGENT, report(run_id="run-7"))
    with pytest.raises(PermissionDenied):
        intake.report_incident(monitor, READER, report(title="Login smoke failed"))
    with monitor.session() as session:
        core = list(read_chain_rows(session, after=0, batch=1))
        orm = list(read_rows(session, after=0))
        assert len(core) == len(orm) >= 2
        for row, event in zip(core, orm, strict=True):
            assert row._asdict() == event.model_dump()
        assert verify_audit_log(monitor, session).ok
