"""The ``incident-monitor`` operator commands, run in process (``main(argv)``) on a real data directory.

State the CLI acts on (incidents, pending approvals, audit events) is set up in-process through the
service layer on the same data directory, and the CLI's effects are checked the same way. One test
runs the installed script as a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlmodel import select

from incident_monitor import __version__
from incident_monitor.domain.enums import ApprovalStatus, DraftStatus, IncidentStatus
from incident_monitor.domain.io import IncidentReport
from incident_monitor.domain.models import AuditEvent
from incident_monitor.errors import PermissionDenied
from incident_monitor.service import approvals, intake, publishing, queries, status, tokens
from incident_monitor.service.destination_health import disable_destination
from incident_monitor.service.monitor import Monitor
from support.cli_helpers import Workspace, isolate, lines, run_cli, table_rows
from support.databases import database_url_env, raw_sql, store_engine, stored_bytes
from support.monitors import AGENT, OPERATOR, WEBHOOK_SECRET_VARIABLE

SCRIPT = Path(sys.executable).with_name("incident-monitor")

CONFIG_TOML = f"""
[[destinations]]
id = "ops-webhook"
kind = "webhook"
url = "http://127.0.0.1:9/hooks/incident"
secret = "env:{WEBHOOK_SECRET_VARIABLE}"
allow_insecure_http = true
allow_private_networks = true

[[destinations]]
id = "telemetry"
kind = "telemetry"

[[routes]]
id = "runtime-failures"
destination_id = "ops-webhook"
priority = 10
[routes.match]
route_tags = ["runtime-failure"]

[default_destination]
destination_id = "telemetry"
"""


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path)


@pytest.fixture
def ws(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Workspace:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG_TOML, encoding="utf-8")
    return Workspace(data_dir=tmp_path / "data", config=config, capsys=capsys)


def create_token(ws: Workspace, name: str, *scopes: str, expires_in_days: int | None = None) -> str:
    """A token made through the service layer (``tokens create`` itself is tested on its own)."""
    with ws.monitor() as monitor:
        created = tokens.create_token(
            monitor, OPERATOR, name=name, scopes=list(scopes), expires_in_days=expires_in_days
        )
    return created.secret


def sql(ws: Workspace, statement: str) -> None:
    with store_engine(ws.data_dir) as engine:
        raw_sql(engine, statement)


def report(
    monitor: Monitor, title: str, *, level: str = "error", route_tags: tuple[str, ...] = ("runtime-failure",)
) -> tuple[str, str]:
    """Report a failure as the local agent; returns (incident_id, draft_id)."""
    result = intake.report_incident(
        monitor,
        AGENT,
        IncidentReport(
            title=title,
            detail="Stack trace in the run log.",
            source="ci",
            event="ci.smoke.failed",
            level=level,
            route_tags=list(route_tags),
        ),
    )
    assert result.draft_id is not None
    return result.incident_id, result.draft_id


# --- the one subprocess smoke test: the installed script -----------------------------------------


def test_the_installed_script_prints_its_version_and_runs_a_command(ws: Workspace) -> None:
    # No stray INCIDENT_MONITOR_* settings, but the database URL on the PostgreSQL pass.
    env = {k: v for k, v in os.environ.items() if not k.startswith("INCIDENT_MONITOR_")} | database_url_env()
    version = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True, timeout=60, check=False)
    status_run = subprocess.run(
        [str(SCRIPT), "--config", str(ws.config), "--data-dir", str(ws.data_dir), "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )

    assert version.returncode == 0
    assert version.stdout.strip() == f"incident-monitor {__version__}"
    assert status_run.returncode == 0, status_run.stderr
    assert json.loads(status_run.stdout)["readiness"]["config_valid"] is True


# --- tokens ------------------------------------------------------------------------------------


def test_tokens_create_prints_the_secret_once_and_list_never_shows_it(ws: Workspace) -> None:
    created = ws.run("tokens", "create", "--name", "ci-agent", "--scopes", "read,report")
    assert created.returncode == 0, created.stderr
    assert len(lines(created.stdout)) == 1  # stdout is the secret alone, so it can be piped into a vault
    secret = created.stdout.strip()
    assert secret.startswith("imt_")
    assert len(secret) > 40
    assert secret not in created.stderr
    assert "shown only once" in created.stderr
    digest = hashlib.sha256(secret.encode()).hexdigest()

    listed = ws.run("tokens", "list")
    as_json = ws.run("tokens", "list", "--json")

    assert listed.returncode == 0
    assert lines(listed.stdout)[0].split() == ["NAME", "STATUS", "SINCE/UNTIL", "SCOPES"]
    assert table_rows(listed.stdout) == [["ci-agent", "active", "-", "read,report"]]
    assert as_json.returncode == 0
    [row] = json.loads(as_json.stdout)
    assert (row["name"], row["scopes"], row["revoked_at"]) == (
        "ci-agent",
        ["incident_monitor:read", "incident_monitor:report"],
        None,
    )
    assert "token_hash" not in row
    for output in (listed.stdout, listed.stderr, as_json.stdout, as_json.stderr):
        assert secret not in output
        assert digest not in output
    # Stored only as a hash: the database never holds the secret itself (the SQLite file's bytes, or every row).
    assert secret.encode() not in stored_bytes(ws.data_dir)


def test_tokens_create_refuses_a_duplicate_name_without_printing_a_secret(ws: Workspace) -> None:
    create_token(ws, "ci-agent", "read")

    again = ws.run("tokens", "create", "--name", "ci-agent", "--scopes", "read,report")

    assert again.returncode == 2
    assert again.stdout == ""
    assert "a token named 'ci-agent' exists" in again.stderr
    assert "revoke it first or choose another name" in again.stderr


def test_tokens_create_refuses_an_unknown_scope_and_lists_the_known_ones(ws: Workspace) -> None:
    done = ws.run("tokens", "create", "--name", "ci-agent", "--scopes", "read,teleport")

    assert done.returncode == 2
    assert done.stdout == ""
    assert "unknown scope 'teleport'" in done.stderr
    known = done.stderr.split("known scopes:", 1)[1]
    for scope in ("read", "report", "triage", "publish", "approve", "resolve"):
        assert scope in known
    with ws.monitor() as monitor:
        assert tokens.list_tokens(monitor, OPERATOR) == []


def test_tokens_revoke_marks_the_token_revoked_and_unknown_names_fail(ws: Workspace) -> None:
    create_token(ws, "ci-agent", "read")

    revoked = ws.run("tokens", "revoke", "ci-agent")
    listed = ws.run("tokens", "list")
    unknown = ws.run("tokens", "revoke", "ghost")

    assert revoked.returncode == 0, revoked.stderr
    assert "token 'ci-agent' revoked" in revoked.stdout
    assert table_rows(listed.stdout)[0][:2] == ["ci-agent", "revoked"]
    with ws.monitor() as monitor:
        [row] = tokens.list_tokens(monitor, OPERATOR)
    assert row.revoked_at is not None
    assert unknown.returncode != 0
    assert "no token named 'ghost'" in unknown.stderr
    assert "tokens list" in unknown.stderr


def test_tokens_list_shows_an_expired_token_as_expired(ws: Workspace) -> None:
    create_token(ws, "old-ci", "read", expires_in_days=1)
    sql(ws, "UPDATE api_tokens SET expires_at = '2020-01-01 00:00:00.000000' WHERE name = 'old-ci'")

    listed = ws.run("tokens", "list")

    assert listed.returncode == 0, listed.stderr
    assert table_rows(listed.stdout)[0][:2] == ["old-ci", "expired"]


def test_token_commands_need_only_a_data_directory(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    done = run_cli(capsys, ["tokens", "create", "--name", "ci", "--scopes", "read", "--data-dir", str(ws.data_dir)])

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("imt_")


# --- approvals ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    approval_id: str
    draft_id: str
    title: str


@pytest.fixture
def two_pending(ws: Workspace, webhook_secret: str) -> tuple[Pending, Pending]:
    """Two drafts the local agent asked to publish, each waiting for an operator."""
    pending = []
    with ws.monitor() as monitor:
        for title in ("Checkout returns HTTP 500", "Nightly export job crashed"):
            _, draft_id = report(monitor, title)
            asked = approvals.request_approval(monitor, AGENT, draft_id, f"page on-call: {title}")
            assert asked.approval.status is ApprovalStatus.pending
            pending.append(Pending(asked.approval.approval_id, draft_id, title))
    return pending[0], pending[1]


def _state(ws: Workspace, item: Pending) -> tuple[ApprovalStatus, DraftStatus]:
    with ws.monitor() as monitor:
        detail = queries.get_draft(monitor, OPERATOR, item.draft_id)
    [approval] = [a for a in detail.approvals if a.approval_id == item.approval_id]
    return approval.status, detail.draft.status


def test_approvals_list_shows_the_pending_requests(ws: Workspace, two_pending: tuple[Pending, Pending]) -> None:
    done = ws.run("approvals", "list")
    as_json = ws.run("approvals", "list", "--json")

    assert done.returncode == 0, done.stderr
    assert lines(done.stdout)[0].split()[:4] == ["APPROVAL", "STATUS", "DRAFT", "DESTINATION"]
    for item in two_pending:
        [row] = [row for row in table_rows(done.stdout) if row[0] == item.approval_id]
        assert row[1:5] == ["pending", item.draft_id, "ops-webhook", "local-agent"]
    assert "page on-call: Checkout returns HTTP 500" in done.stdout
    page = json.loads(as_json.stdout)
    assert {a["approval_id"] for a in page["approvals"]} == {p.approval_id for p in two_pending}
    assert page["next_offset"] is None


def test_approve_prints_what_was_approved_and_deny_decides_as_the_local_operator(
    ws: Workspace, two_pending: tuple[Pending, Pending]
) -> None:
    to_approve, to_deny = two_pending
    with ws.monitor() as monitor:
        digest = queries.get_draft(monitor, OPERATOR, to_approve.draft_id).draft.evidence_digest

    approved = ws.run("approvals", "approve", to_approve.approval_id, "--note", "Evidence checked.")
    denied = ws.run("approvals", "deny", to_deny.approval_id, "--note", "Known flake; not worth a page.", "--json")

    assert approved.returncode == 0, approved.stderr
    assert f"approval {to_approve.approval_id}: approved by {OPERATOR.name}" in approved.stdout
    assert f"draft:           {to_approve.draft_id}: {to_approve.title}" in approved.stdout
    assert "destination:     ops-webhook\n" in approved.stdout
    assert f"evidence digest: {digest}" in approved.stdout
    assert f"publish_draft with draft_id={to_approve.draft_id}" in approved.stdout
    assert denied.returncode == 0, denied.stderr
    result = json.loads(denied.stdout)
    assert result["approval"]["status"] == "denied"
    assert result["approval"]["decided_by"] == OPERATOR.name
    assert result["approval"]["decision_note"] == "Known flake; not worth a page."
    assert result["draft_status"] == "denied"
    assert _state(ws, to_approve) == (ApprovalStatus.approved, DraftStatus.approved)
    assert _state(ws, to_deny) == (ApprovalStatus.denied, DraftStatus.denied)

    # A decision is final: deciding again is refused and changes nothing.
    again = ws.run("approvals", "deny", to_approve.approval_id, "--note", "changed my mind")
    assert again.returncode == 1
    assert f"approval {to_approve.approval_id} is approved, not pending" in again.stderr
    assert _state(ws, to_approve) == (ApprovalStatus.approved, DraftStatus.approved)


def test_deciding_needs_a_note_and_a_known_approval_id(ws: Workspace, two_pending: tuple[Pending, Pending]) -> None:
    item = two_pending[0]

    no_note = ws.run("approvals", "approve", item.approval_id)
    unknown = ws.run("approvals", "approve", "apr_0000000000000000", "--note", "looks fine")

    assert no_note.returncode == 2
    assert "the following arguments are required: --note" in no_note.stderr
    assert unknown.returncode == 1
    assert "no approval apr_0000000000000000" in unknown.stderr
    assert "incident-monitor approvals list" in unknown.stderr
    assert _state(ws, item) == (ApprovalStatus.pending, DraftStatus.approval_required)


def test_an_approval_refused_for_another_config_names_the_config_this_cli_loaded_first(
    ws: Workspace, two_pending: tuple[Pending, Pending], tmp_path: Path
) -> None:
    item = two_pending[0]
    with ws.monitor() as monitor:
        server_policy = monitor.config.policy_version
    other = tmp_path / "other.toml"
    other.write_text(CONFIG_TOML.replace("priority = 10", "priority = 11"), encoding="utf-8")

    done = run_cli(
        ws.capsys,
        [
            "approvals",
            "approve",
            item.approval_id,
            "--note",
            "ok",
            "--config",
            str(other),
            "--data-dir",
            str(ws.data_dir),
        ],
    )

    assert done.returncode == 1
    first_line = done.stderr.splitlines()[0]
    assert first_line.startswith(f"error: this CLI loaded {other.resolve()} (from --config; policy pv_")
    assert f"the server runs policy {server_policy} (approval {item.approval_id} was requested under it)" in first_line
    assert "Run this command with the server's config" in first_line
    assert done.stdout == ""
    assert _state(ws, item) == (ApprovalStatus.pending, DraftStatus.approval_required)
    # With the server's config the same approval goes through.
    assert ws.run("approvals", "approve", item.approval_id, "--note", "ok").returncode == 0


def test_approvals_show_prints_the_request_with_its_draft_and_policy(
    ws: Workspace, two_pending: tuple[Pending, Pending]
) -> None:
    item = two_pending[0]

    text = ws.run("approvals", "show", item.approval_id)
    as_json = ws.run("approvals", "show", item.approval_id, "--json")
    unknown = ws.run("approvals", "show", "apr_missing")

    assert text.returncode == 0, text.stderr
    assert f"draft:           {item.draft_id}: {item.title}" in text.stdout
    assert "destination:     ops-webhook" in text.stdout
    assert "requested:       by local-agent" in text.stdout
    assert f"incident-monitor drafts show {item.draft_id}" in text.stdout
    shown = json.loads(as_json.stdout)
    assert (shown["approval_id"], shown["status"], shown["destination_id"]) == (
        item.approval_id,
        "pending",
        "ops-webhook",
    )
    assert unknown.returncode == 2  # invalid input
    # Not an id's shape: refused by field, the value not repeated (issue 12).
    assert "approval_id: not an id of this monitor" in unknown.stderr and "apr_missing" not in unknown.stderr


# --- incidents, drafts, receipts ---------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    incident_id: str
    draft_id: str
    receipt_id: str


@pytest.fixture
def published(ws: Workspace) -> Published:
    """A medium-severity report published to the telemetry default destination (no approval needed)."""
    with ws.monitor() as monitor:
        incident_id, draft_id = report(monitor, "Cache warm-up slow", level="warning", route_tags=())
        result = anyio.run(publishing.publish_draft, monitor, AGENT, draft_id)
    assert result.receipt.status.value == "published"
    return Published(incident_id, draft_id, result.receipt.receipt_id)


def test_incidents_list_and_show(ws: Workspace, published: Published) -> None:
    listed = ws.run("incidents", "list")
    as_json = ws.run("incidents", "list", "--json", "--status", "published")
    shown = ws.run("incidents", "show", published.incident_id)
    shown_json = ws.run("incidents", "show", published.incident_id, "--json")

    assert listed.returncode == 0, listed.stderr
    assert lines(listed.stdout)[0].split()[:4] == ["INCIDENT", "STATUS", "SEVERITY", "SOURCE"]
    assert table_rows(listed.stdout)[0][:4] == [published.incident_id, "published", "medium", "ci"]
    assert "Cache warm-up slow" in listed.stdout
    assert [i["incident_id"] for i in json.loads(as_json.stdout)["incidents"]] == [published.incident_id]
    assert shown.returncode == 0, shown.stderr
    assert "title:" in shown.stdout and "Cache warm-up slow" in shown.stdout
    assert "Stack trace in the run log." in shown.stdout
    assert published.draft_id in shown.stdout
    assert f"incident-monitor receipts list --incident {published.incident_id}" in shown.stdout
    detail = json.loads(shown_json.stdout)
    assert detail["incident"]["incident_id"] == published.incident_id
    assert [d["draft_id"] for d in detail["drafts"]] == [published.draft_id]


def test_incidents_list_says_when_there_are_none(ws: Workspace) -> None:
    done = ws.run("incidents", "list", "--status", "resolved")

    assert done.returncode == 0
    assert done.stdout.strip() == "no resolved incidents"


def test_drafts_list_and_show_with_evidence_digest_triage_and_route_preview(
    ws: Workspace, two_pending: tuple[Pending, Pending]
) -> None:
    item = two_pending[0]
    with ws.monitor() as monitor:
        draft = queries.get_draft(monitor, OPERATOR, item.draft_id).draft

    listed = ws.run("drafts", "list", "--status", "approval_required")
    listed_json = ws.run("drafts", "list", "--json")
    shown = ws.run("drafts", "show", item.draft_id)
    shown_json = ws.run("drafts", "show", item.draft_id, "--json")

    assert listed.returncode == 0, listed.stderr
    assert {row[0] for row in table_rows(listed.stdout)} == {p.draft_id for p in two_pending}
    assert {d["draft_id"] for d in json.loads(listed_json.stdout)["drafts"]} == {p.draft_id for p in two_pending}
    assert shown.returncode == 0, shown.stderr
    assert f"evidence digest: {draft.evidence_digest}" in shown.stdout
    assert "evidence (redacted, as it would be published):" in shown.stdout
    assert "not triaged yet" in shown.stdout
    assert "route preview (what publish would do now):" in shown.stdout
    assert "destination:       ops-webhook (webhook)" in shown.stdout
    assert "route 'runtime-failures'" in shown.stdout
    assert item.approval_id in shown.stdout
    review = json.loads(shown_json.stdout)
    assert review["detail"]["draft"]["evidence_digest"] == draft.evidence_digest
    assert review["route"]["destination_id"] == "ops-webhook"
    assert review["route"]["approval_required"] is True
    with ws.monitor() as monitor, monitor.session() as session:
        actions = [e.action for e in session.exec(select(AuditEvent)).all()]
    assert actions.count("review_draft") == 2  # a read, audited like every other


def test_receipts_list_and_show(ws: Workspace, published: Published) -> None:
    listed = ws.run("receipts", "list")
    listed_json = ws.run("receipts", "list", "--json", "--draft", published.draft_id)
    shown = ws.run("receipts", "show", published.receipt_id)
    shown_json = ws.run("receipts", "show", published.receipt_id, "--json")
    unknown = ws.run("receipts", "show", "rcp_missing")

    assert listed.returncode == 0, listed.stderr
    assert table_rows(listed.stdout)[0][:4] == [published.receipt_id, "published", "telemetry", published.draft_id]
    assert [r["receipt_id"] for r in json.loads(listed_json.stdout)["receipts"]] == [published.receipt_id]
    assert "destination:       telemetry (telemetry)" in shown.stdout
    assert "no route matched: default destination policy" in shown.stdout
    assert json.loads(shown_json.stdout)["status"] == "published"
    assert unknown.returncode == 2  # invalid input
    assert "receipt_id: not an id of this monitor" in unknown.stderr and "rcp_missing" not in unknown.stderr


# --- audit -------------------------------------------------------------------------------------


def _record_status_reads(ws: Workspace, count: int) -> None:
    with ws.monitor() as monitor:
        for _ in range(count):
            status.get_status(monitor, AGENT)


def test_audit_verify_passes_an_intact_log_and_names_a_modified_event(ws: Workspace) -> None:
    _record_status_reads(ws, 3)

    intact = ws.run("audit", "verify")
    sql(ws, "UPDATE audit_events SET reasons = '[]' WHERE seq = 2")
    tampered = ws.run("audit", "verify", "--json")

    assert intact.returncode == 0, intact.stderr
    # The three reads and the audit checkpoint their monitor wrote when it closed.
    assert "audit chain intact: 4 events" in intact.stdout
    assert tampered.returncode == 1
    verdict = json.loads(tampered.stdout)
    assert verdict["ok"] is False
    assert verdict["first_broken_seq"] == 2
    assert "modified" in verdict["problem"]


def test_audit_verify_detects_a_deleted_event(ws: Workspace) -> None:
    _record_status_reads(ws, 4)
    sql(ws, "DELETE FROM audit_events WHERE seq = 2")

    done = ws.run("audit", "verify")

    assert done.returncode == 1
    assert "audit chain BROKEN at event 3" in done.stdout
    assert "removed" in done.stdout


def test_audit_list_shows_the_newest_events_with_principal_action_and_decision(ws: Workspace) -> None:
    with ws.monitor() as monitor:
        status.get_status(monitor, OPERATOR)
        queries.list_incidents(monitor, AGENT)
        with pytest.raises(PermissionDenied):
            approvals.decide_approval(monitor, AGENT, "apr_0000000000000000", "approve", "self-serve")

    done = ws.run("audit", "list", "--limit", "4")

    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout)
    assert len(rows) == 4
    # The newest row is the audit checkpoint that monitor wrote when it closed (the monitor's own row).
    assert [rows[3][0], *rows[3][3:5]] == ["5", "incident-monitor:audit", "audit_checkpoint_written"]
    # columns: seq, date, time, principal, action, decision, …
    assert [rows[0][0], *rows[0][3:6]] == ["2", "local-agent", "list_incidents", "allow"]
    assert [rows[1][0], *rows[1][3:6]] == ["3", "local-agent", "decide_approval", "deny"]
    assert "incident_monitor:approve" in lines(done.stdout)[2]
    # The refusal opened a self-monitoring incident, reported by the system principal.
    assert [rows[2][0], *rows[2][3:6]] == ["4", "system:self-monitor", "report_incident", "allow"]
    assert OPERATOR.name not in done.stdout  # event #1 is older than the newest three


# --- status ------------------------------------------------------------------------------------


def test_status_reports_readiness_and_names_the_missing_secret_variable(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(WEBHOOK_SECRET_VARIABLE, raising=False)

    text = ws.run("status")
    as_json = ws.run("status", "--json")

    assert text.returncode == 0, text.stderr
    assert "config_valid=True ingest_ready=True route_preview_ready=True" in text.stdout
    assert "destination ops-webhook (webhook): NOT READY" in text.stdout
    assert "destination telemetry (telemetry): ready" in text.stdout
    assert f"problem: destination 'ops-webhook': environment variable {WEBHOOK_SECRET_VARIABLE}" in text.stdout

    assert as_json.returncode == 0, as_json.stderr
    view: dict[str, Any] = json.loads(as_json.stdout)
    assert set(view["readiness"]) == {
        "config_valid",
        "ingest_ready",
        "route_preview_ready",
        "publish_ready",
        "publish_state",
        "source_ready",
    }
    assert view["readiness"]["publish_state"] == "degraded" and view["readiness"]["publish_ready"] is False
    assert view["readiness"]["config_valid"] is True
    assert {d["destination_id"]: d["ready"] for d in view["destinations"]} == {"ops-webhook": False, "telemetry": True}
    assert view["default_destination"] == "telemetry"
    assert view["caller"]["principal"] == OPERATOR.name
    assert any(WEBHOOK_SECRET_VARIABLE in problem for problem in view["problems"])


def test_status_json_has_no_problems_when_the_secret_is_set(ws: Workspace, webhook_secret: str) -> None:
    done = ws.run("status", "--json")

    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)
    assert view["problems"] == []
    assert all(d["ready"] for d in view["destinations"])
    assert view["readiness"]["publish_ready"] is True
    assert webhook_secret not in done.stdout


# --- incidents resolve, destinations ------------------------------------------------------------


def test_incidents_resolve_records_the_note_and_a_second_resolve_is_refused(ws: Workspace) -> None:
    with ws.monitor() as monitor:
        incident_id, _ = report(monitor, "Disk full on build agent 3")

    resolved = ws.run("incidents", "resolve", incident_id, "--note", "Rotated the build cache.")
    again = ws.run("incidents", "resolve", incident_id, "--note", "Rotated it again.")

    assert resolved.returncode == 0, resolved.stderr
    assert f"incident {incident_id} resolved by {OPERATOR.name}: Rotated the build cache." in resolved.stdout
    with ws.monitor() as monitor:
        incident = queries.get_incident(monitor, OPERATOR, incident_id).incident
    assert incident.status is IncidentStatus.resolved
    assert incident.resolution_note == "Rotated the build cache."
    assert incident.resolved_by == OPERATOR.name

    assert again.returncode == 1
    assert incident_id in again.stderr
    assert "resolved" in again.stderr


def test_destinations_enable_re_enables_a_destination_its_receiver_disabled(ws: Workspace) -> None:
    with ws.monitor() as monitor:
        with monitor.session() as session:
            disable_destination(session, "ops-webhook", "webhook answered 410 Gone", monitor.clock())
        assert monitor.readiness("ops-webhook").reasons[0].startswith("disabled since ")

    shown = ws.run("status")
    assert "disabled since" in shown.stdout and "destinations enable ops-webhook" in shown.stdout
    listed = ws.run("destinations", "list")
    assert [row[:3] for row in table_rows(listed.stdout)] == [
        ["ops-webhook", "webhook", "NOT"],
        ["telemetry", "telemetry", "ready"],
    ]

    enabled = ws.run("destinations", "enable", "ops-webhook")
    assert enabled.returncode == 0, enabled.stderr
    assert enabled.stdout.strip() == "destination ops-webhook re-enabled"
    assert ws.run("destinations", "enable", "ops-webhook").stdout.strip() == "destination ops-webhook was not disabled"
    unknown = ws.run("destinations", "enable", "nope")
    assert unknown.returncode == 2
    assert "destination_id: unknown destination 'nope'" in unknown.stderr
    with ws.monitor() as monitor:
        assert all("disabled" not in reason for reason in monitor.readiness("ops-webhook").reasons)
        with monitor.session() as session:
            actions = [e.action for e in session.exec(select(AuditEvent)).all()]
    assert actions.count("enable_destination") == 3  # two allowed, one rejected: all audited
