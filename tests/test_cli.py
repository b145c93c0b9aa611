"""The installed ``incident-monitor`` operator commands, run as subprocesses on a real data directory.

State the CLI acts on (incidents, pending approvals, audit events) is set up in-process through the
service layer on the same data directory, and the CLI's effects are checked the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from conftest import AGENT, DATABASE_URL_VARIABLE, OPERATOR, WEBHOOK_SECRET_VARIABLE, raw_sql, store_engine
from incident_monitor import __version__
from incident_monitor.domain.enums import ApprovalStatus, DraftStatus, IncidentStatus
from incident_monitor.domain.io import IncidentReport
from incident_monitor.domain.models import AuditEvent
from incident_monitor.errors import PermissionDenied
from incident_monitor.service import approvals, intake, queries, self_monitoring, status, tokens
from incident_monitor.service.destination_health import disable_destination
from incident_monitor.service.monitor import Monitor

SCRIPT = Path(sys.executable).with_name("incident-monitor")
# Kept in a child CLI's environment: the webhook secret, and the database URL on the PostgreSQL pass.
KEEP_VARIABLES = (WEBHOOK_SECRET_VARIABLE, DATABASE_URL_VARIABLE)
DATABASE = "incident-monitor.sqlite3"

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


@dataclass(frozen=True)
class Workspace:
    data_dir: Path
    config: Path

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``incident-monitor ARGS --data-dir … --config …`` as an operator would type it."""
        return subprocess.run(
            [str(SCRIPT), *args, "--data-dir", str(self.data_dir), "--config", str(self.config)],
            env=env if env is not None else child_env(),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )

    @contextmanager
    def monitor(self) -> Iterator[Monitor]:
        """The same data directory and config, opened in-process (real clock, assembled like the CLI)."""
        opened = self_monitoring.attach(Monitor.open(config_path=self.config, data_dir=self.data_dir))
        try:
            yield opened
        finally:
            opened.close()

    def create_token(self, name: str, *scopes: str, expires_in_days: int | None = None) -> str:
        """A token made through the service layer (``tokens create`` itself is tested on its own)."""
        with self.monitor() as monitor:
            created = tokens.create_token(
                monitor, OPERATOR, name=name, scopes=list(scopes), expires_in_days=expires_in_days
            )
        return created.secret

    def sql(self, statement: str) -> None:
        with store_engine(self.data_dir) as engine:
            raw_sql(engine, statement)


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment (incl. a monkeypatched webhook secret) minus stray INCIDENT_MONITOR_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INCIDENT_MONITOR_") or k in KEEP_VARIABLES}
    env.update(extra)
    return env


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG_TOML, encoding="utf-8")
    return Workspace(data_dir=tmp_path / "data", config=config)


def report(monitor: Monitor, title: str) -> tuple[str, str]:
    """Report a runtime failure as the local agent; returns (incident_id, draft_id)."""
    result = intake.report_incident(
        monitor,
        AGENT,
        IncidentReport(
            title=title,
            detail="Stack trace in the run log.",
            source="ci",
            event="ci.smoke.failed",
            route_tags=["runtime-failure"],
        ),
    )
    assert result.draft_id is not None
    return result.incident_id, result.draft_id


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --- version -----------------------------------------------------------------------------------


def test_version_flag_prints_the_installed_version() -> None:
    done = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode == 0
    assert done.stdout.strip() == f"incident-monitor {__version__}"


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
    assert lines(listed.stdout)[0].split() == ["ci-agent", "active", "read,report"]
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
    if (ws.data_dir / DATABASE).exists():
        stored = (ws.data_dir / DATABASE).read_bytes() + b"".join(p.read_bytes() for p in ws.data_dir.glob("*-wal"))
    else:
        with store_engine(ws.data_dir) as engine:
            stored = repr(raw_sql(engine, "SELECT * FROM api_tokens")).encode()
    assert secret.encode() not in stored


def test_tokens_create_refuses_a_duplicate_name_without_printing_a_secret(ws: Workspace) -> None:
    ws.create_token("ci-agent", "read")

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
    ws.create_token("ci-agent", "read")

    revoked = ws.run("tokens", "revoke", "ci-agent")
    listed = ws.run("tokens", "list")
    unknown = ws.run("tokens", "revoke", "ghost")

    assert revoked.returncode == 0, revoked.stderr
    assert "token 'ci-agent' revoked" in revoked.stdout
    assert lines(listed.stdout)[0].split()[:2] == ["ci-agent", "revoked"]
    with ws.monitor() as monitor:
        [row] = tokens.list_tokens(monitor, OPERATOR)
    assert row.revoked_at is not None
    assert unknown.returncode != 0
    assert "no token named 'ghost'" in unknown.stderr
    assert "tokens list" in unknown.stderr


def test_tokens_list_shows_an_expired_token_as_expired(ws: Workspace) -> None:
    ws.create_token("old-ci", "read", expires_in_days=1)
    ws.sql("UPDATE api_tokens SET expires_at = '2020-01-01 00:00:00.000000' WHERE name = 'old-ci'")

    listed = ws.run("tokens", "list")

    assert listed.returncode == 0, listed.stderr
    assert lines(listed.stdout)[0].split()[:2] == ["old-ci", "expired"]


# --- approvals ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    approval_id: str
    draft_id: str


@pytest.fixture
def two_pending(ws: Workspace, webhook_secret: str) -> tuple[Pending, Pending]:
    """Two drafts the local agent asked to publish, each waiting for an operator."""
    pending = []
    with ws.monitor() as monitor:
        for title in ("Checkout returns HTTP 500", "Nightly export job crashed"):
            _, draft_id = report(monitor, title)
            asked = approvals.request_approval(monitor, AGENT, draft_id, f"page on-call: {title}")
            assert asked.approval.status is ApprovalStatus.pending
            pending.append(Pending(asked.approval.approval_id, draft_id))
    return pending[0], pending[1]


def _state(ws: Workspace, item: Pending) -> tuple[ApprovalStatus, DraftStatus]:
    with ws.monitor() as monitor:
        detail = queries.get_draft(monitor, OPERATOR, item.draft_id)
    [approval] = [a for a in detail.approvals if a.approval_id == item.approval_id]
    return approval.status, detail.draft.status


def test_approvals_list_shows_the_pending_requests(ws: Workspace, two_pending: tuple[Pending, Pending]) -> None:
    done = ws.run("approvals", "list")

    assert done.returncode == 0, done.stderr
    for item in two_pending:
        [line] = [line for line in lines(done.stdout) if line.startswith(item.approval_id)]
        assert "pending" in line
        assert f"draft={item.draft_id}" in line
        assert "destination=ops-webhook" in line
        assert "by=local-agent" in line
    assert "reason: page on-call: Checkout returns HTTP 500" in done.stdout


def test_approve_and_deny_decide_as_the_local_operator(ws: Workspace, two_pending: tuple[Pending, Pending]) -> None:
    to_approve, to_deny = two_pending

    approved = ws.run("approvals", "approve", to_approve.approval_id, "--note", "Evidence checked.", "--json")
    denied = ws.run("approvals", "deny", to_deny.approval_id, "--note", "Known flake; not worth a page.")

    assert approved.returncode == 0, approved.stderr
    result = json.loads(approved.stdout)
    assert result["approval"]["status"] == "approved"
    assert result["approval"]["decided_by"] == OPERATOR.name
    assert result["approval"]["decision_note"] == "Evidence checked."
    assert result["draft_status"] == "approved"
    assert denied.returncode == 0, denied.stderr
    assert f"approval {to_deny.approval_id}: denied by {OPERATOR.name}" in denied.stdout
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
    assert "no approval 'apr_0000000000000000'" in unknown.stderr
    assert "incident-monitor approvals list" in unknown.stderr
    assert _state(ws, item) == (ApprovalStatus.pending, DraftStatus.approval_required)


# --- audit -------------------------------------------------------------------------------------


def _record_status_reads(ws: Workspace, count: int) -> None:
    with ws.monitor() as monitor:
        for _ in range(count):
            status.get_status(monitor, AGENT)


def test_audit_verify_passes_an_intact_log_and_names_a_modified_event(ws: Workspace) -> None:
    _record_status_reads(ws, 3)

    intact = ws.run("audit", "verify")
    ws.sql("UPDATE audit_events SET reasons = '[]' WHERE seq = 2")
    tampered = ws.run("audit", "verify", "--json")

    assert intact.returncode == 0, intact.stderr
    assert "audit chain intact: 3 events" in intact.stdout
    assert tampered.returncode == 1
    verdict = json.loads(tampered.stdout)
    assert verdict["ok"] is False
    assert verdict["first_broken_seq"] == 2
    assert "modified" in verdict["problem"]


def test_audit_verify_detects_a_deleted_event(ws: Workspace) -> None:
    _record_status_reads(ws, 4)
    ws.sql("DELETE FROM audit_events WHERE seq = 2")

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

    done = ws.run("audit", "list", "--limit", "3")

    assert done.returncode == 0, done.stderr
    shown = lines(done.stdout)
    assert len(shown) == 3
    assert shown[0].split()[0] == "#2"
    assert shown[0].split()[2:5] == ["local-agent", "list_incidents", "allow"]
    assert shown[1].split()[0] == "#3"
    assert shown[1].split()[2:5] == ["local-agent", "decide_approval", "deny"]
    assert "incident_monitor:approve" in shown[1]
    # The refusal opened a self-monitoring incident, reported by the system principal.
    assert shown[2].split()[0] == "#4"
    assert shown[2].split()[2:5] == ["system:self-monitor", "report_incident", "allow"]
    assert OPERATOR.name not in done.stdout  # event #1 is older than the newest three


# --- status ------------------------------------------------------------------------------------


def test_status_reports_readiness_and_names_the_missing_secret_variable(ws: Workspace) -> None:
    env = child_env()
    env.pop(WEBHOOK_SECRET_VARIABLE, None)

    text = ws.run("status", env=env)
    as_json = ws.run("status", "--json", env=env)

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
    }
    assert view["readiness"]["publish_state"] == "degraded" and view["readiness"]["publish_ready"] is False
    assert view["readiness"]["config_valid"] is True
    assert {d["destination_id"]: d["ready"] for d in view["destinations"]} == {"ops-webhook": False, "telemetry": True}
    assert view["default_destination"] == "telemetry"
    assert view["caller"]["principal"] == OPERATOR.name
    [problem] = view["problems"]
    assert WEBHOOK_SECRET_VARIABLE in problem


def test_status_json_has_no_problems_when_the_secret_is_set(ws: Workspace, webhook_secret: str) -> None:
    done = ws.run("status", "--json")

    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)
    assert view["problems"] == []
    assert all(d["ready"] for d in view["destinations"])
    assert view["readiness"]["publish_ready"] is True
    assert webhook_secret not in done.stdout


# --- incidents ---------------------------------------------------------------------------------


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
