"""Every way the MCP tools say no: what the caller reads, that nothing changed, and the audit row.

Secrets are checked end to end: a canary reported in every free-text field must come back from no
tool, reach no destination, and be written to no table, database file or log.
"""

from __future__ import annotations

import json
import logging
import secrets
import string
from collections.abc import Callable
from typing import Any

import pytest
from mcp import Client
from mcp.types import CallToolResult
from sqlmodel import SQLModel, col, func, select

from incident_monitor.config import Limits
from incident_monitor.domain.models import (
    ApiToken,
    ApprovalRequest,
    AuditEvent,
    Draft,
    Incident,
    IncidentOccurrence,
    Receipt,
    TriageRun,
)
from incident_monitor.policy.principal import Principal
from incident_monitor.policy.scopes import ACTION_SCOPES, ALL_SCOPES
from incident_monitor.server.principals import stdio_principal
from incident_monitor.server.tools import TOOL_ANNOTATIONS
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.tokens import create_token, revoke_token
from incident_monitor.store.engine import DATABASE_FILENAME
from support.databases import raw_sql
from support.mcp_helpers import RUNTIME_FAILURE, agent_and_operator, call_ok, call_refused, error_text, mcp_client
from support.monitors import AGENT, OPERATOR, FakeClock, MonitorFactory, flow_config, principal
from support.receivers import WebhookReceiver

pytestmark = pytest.mark.anyio

MCP_TOOLS_WITH_SCOPES = sorted(set(ACTION_SCOPES) & set(TOOL_ANNOTATIONS))


def random_alnum(n: int) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(n))


# Fresh per run, so a hit can only come from this run's report.
GITHUB_CANARY = "ghp_" + random_alnum(36)
OPENAI_CANARY = "sk-live-" + random_alnum(24)
CANARIES = (GITHUB_CANARY, OPENAI_CANARY)


# --- MCP helpers -----------------------------------------------------------------------------------


async def request(agent: Client, draft_id: str) -> str:
    requested = await call_ok(agent, "request_approval", draft_id=draft_id, reason="Every run fails.")
    return str(requested["approval"]["approval_id"])


async def approve(agent: Client, operator: Client, draft_id: str) -> str:
    approval_id = await request(agent, draft_id)
    await call_ok(operator, "decide_approval", approval_id=approval_id, decision="approve", note="Evidence checked.")
    return approval_id


# --- store helpers ---------------------------------------------------------------------------------


def state(monitor: Monitor) -> dict[str, Any]:
    """Everything a tool call could change, except the audit log (checked on its own)."""
    with monitor.session() as session:

        def rows(model: Any, *fields: str) -> list[tuple[Any, ...]]:
            return sorted(tuple(getattr(r, f) for f in fields) for r in session.exec(select(model)).all())

        return {
            "incidents": rows(Incident, "incident_id", "status", "occurrence_count", "resolution_note"),
            "occurrences": rows(IncidentOccurrence, "occurrence_id"),
            "drafts": rows(Draft, "draft_id", "status", "evidence_digest"),
            "triage_runs": rows(TriageRun, "triage_run_id"),
            "approvals": rows(ApprovalRequest, "approval_id", "status"),
            "receipts": rows(Receipt, "receipt_id", "status"),
            "tokens": rows(ApiToken, "token_id", "revoked_at"),
        }


def audit_head(monitor: Monitor) -> int:
    with monitor.session() as session:
        return session.exec(select(func.coalesce(func.max(AuditEvent.seq), 0))).one()


def audit_since(monitor: Monitor, seq: int) -> list[AuditEvent]:
    with monitor.session() as session:
        return list(session.exec(select(AuditEvent).where(col(AuditEvent.seq) > seq).order_by(col(AuditEvent.seq))))


def the_audit_row(monitor: Monitor, since: int, action: str, decision: str) -> AuditEvent:
    """The one audit row the refused call wrote (exactly one row per call)."""
    rows = [r for r in audit_since(monitor, since) if r.action == action]
    assert [r.decision.value for r in rows] == [decision], [(r.action, r.decision, r.reasons) for r in rows]
    return rows[0]


def all_audit_text(monitor: Monitor) -> str:
    return json.dumps([r.model_dump(mode="json") for r in audit_since(monitor, 0)])


def receipts_of(monitor: Monitor, draft_id: str) -> list[Receipt]:
    with monitor.session() as session:
        return list(session.exec(select(Receipt).where(Receipt.draft_id == draft_id)))


def assert_no_canary(where: str, text: str | bytes) -> None:
    for canary in CANARIES:
        needle: str | bytes = canary.encode() if isinstance(text, bytes) else canary
        assert needle not in text, f"secret {canary[:6]}… leaked into {where}"


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def monitor(make_monitor: MonitorFactory, receiver: WebhookReceiver) -> Monitor:
    # Self-monitoring off: these tests count each refused call's own rows (tests/service/test_self_monitoring.py
    # covers the incidents a refusal opens).
    return make_monitor(flow_config(receiver.url, self_monitoring={"enabled": False}))


# --- scopes ----------------------------------------------------------------------------------------


def valid_arguments(tool: str, ids: dict[str, str]) -> dict[str, Any]:
    """Arguments that would succeed, so only the missing scope can be the reason for a refusal."""
    return {
        "get_status": {},
        "report_incident": {**RUNTIME_FAILURE, "title": "Another failure entirely"},
        "list_incidents": {},
        "get_incident": {"incident_id": ids["incident_id"]},
        "list_drafts": {},
        "get_draft": {"draft_id": ids["draft_id"]},
        "triage_draft": {"draft_id": ids["draft_id"]},
        "preview_route": {"draft_id": ids["draft_id"]},
        "request_approval": {"draft_id": ids["draft_id"], "reason": "please"},
        "decide_approval": {"approval_id": ids["approval_id"], "decision": "approve", "note": "fine"},
        "publish_draft": {"draft_id": ids["draft_id"]},
        "list_receipts": {},
        "list_sources": {},
        "resolve_incident": {"incident_id": ids["incident_id"], "resolution_note": "fixed"},
        "get_authority_inventory": {},
        "run_posture_checks": {},
        "run_assessment_probes": {},
        "build_assessment_report": {},
        "build_deployment_cards": {},
        "request_code_change": {"incident_id": ids["incident_id"], "repository": "acme/shop", "instructions": "fix"},
        "follow_up_code_change": {"run_id": "ccr_" + "0" * 16, "instructions": "also this"},
        "stop_code_change": {"run_id": "ccr_" + "0" * 16},
        "get_code_change": {"run_id": "ccr_" + "0" * 16},
        "list_code_changes": {},
    }[tool]


@pytest.mark.parametrize("tool", MCP_TOOLS_WITH_SCOPES)
async def test_a_tool_called_without_its_scope_is_denied_naming_the_scope(monitor: Monitor, tool: str) -> None:
    async with mcp_client(monitor, AGENT) as agent:
        reported = await call_ok(agent, "report_incident", **RUNTIME_FAILURE)
        approval_id = await request(agent, reported["draft_id"])
    ids = {"incident_id": reported["incident_id"], "draft_id": reported["draft_id"], "approval_id": approval_id}
    needed = ACTION_SCOPES[tool]
    caller = principal(f"lacks-{tool}", *(ALL_SCOPES - needed))
    before, since = state(monitor), audit_head(monitor)

    async with mcp_client(monitor, caller) as client:
        assert tool not in {t.name for t in (await client.list_tools()).tools}
        refusal = await call_refused(client, tool, **valid_arguments(tool, ids))

    assert "permission denied" in refusal
    for scope in needed:
        assert scope in refusal
    assert state(monitor) == before
    row = the_audit_row(monitor, since, tool, "deny")
    assert row.principal == caller.name
    assert any(scope in reason for reason in row.reasons for scope in needed)


@pytest.mark.parametrize("name", ["delete_all_incidents", "list_approvals"])  # the second is a CLI action only
async def test_an_unknown_tool_is_denied_and_audited(monitor: Monitor, name: str) -> None:
    before, since = state(monitor), audit_head(monitor)
    async with mcp_client(monitor, principal("everything", *ALL_SCOPES)) as client:
        refusal = await call_refused(client, name, confirm=True)

    assert "unknown tool" in refusal and name in refusal
    assert "tools/list" in refusal
    assert state(monitor) == before
    row = the_audit_row(monitor, since, f"tool:{name}", "deny")
    assert row.principal == "everything"


async def test_a_principal_cannot_approve_its_own_request(monitor: Monitor, receiver: WebhookReceiver) -> None:
    both = principal("agent-with-approve", "read", "report", "approval_request", "approve", "publish")
    async with mcp_client(monitor, both) as client:
        draft_id = (await call_ok(client, "report_incident", **RUNTIME_FAILURE))["draft_id"]
        approval_id = await request(client, draft_id)
        before, since = state(monitor), audit_head(monitor)

        refusal = await call_refused(
            client, "decide_approval", approval_id=approval_id, decision="approve", note="looks fine to me"
        )
        assert "self-approval" in refusal
        assert "incident_monitor:approve" in refusal  # who may decide instead

        draft = (await call_ok(client, "get_draft", draft_id=draft_id))["draft"]
        assert draft["status"] == "approval_required"

    assert state(monitor) == before
    row = the_audit_row(monitor, since, "decide_approval", "deny")
    assert row.principal == both.name
    assert receiver.deliveries == []


# --- publish gates ---------------------------------------------------------------------------------


async def test_publish_without_the_required_approval_is_refused_and_leaves_a_blocked_receipt(
    monitor: Monitor, receiver: WebhookReceiver
) -> None:
    async with mcp_client(monitor, AGENT) as agent:
        draft_id = (await call_ok(agent, "report_incident", **RUNTIME_FAILURE))["draft_id"]
        before, since = state(monitor), audit_head(monitor)

        refusal = await call_refused(agent, "publish_draft", draft_id=draft_id)

    assert "approval required" in refusal
    assert f"call request_approval with draft_id={draft_id}" in refusal
    assert receiver.request_count == 0
    after = state(monitor)
    assert {k: v for k, v in after.items() if k != "receipts"} == {k: v for k, v in before.items() if k != "receipts"}
    [receipt] = receipts_of(monitor, draft_id)
    assert receipt.status.value == "blocked"
    assert receipt.destination_id == "ops-webhook"
    assert "approval required" in (receipt.error or "")
    assert receipt.external_id is None
    the_audit_row(monitor, since, "publish_draft", "approval_required")


async def test_an_approval_does_not_cover_evidence_that_changed_after_it(
    monitor: Monitor, receiver: WebhookReceiver
) -> None:
    async with agent_and_operator(monitor) as (agent, operator):
        first = await call_ok(agent, "report_incident", **RUNTIME_FAILURE)
        draft_id = first["draft_id"]
        approved_digest = (await call_ok(agent, "triage_draft", draft_id=draft_id))["evidence_digest"]
        approval_id = await approve(agent, operator, draft_id)

        # The same failure seen by another worker: a near-identical title, so a different fingerprint.
        second = await call_ok(agent, "report_incident", **RUNTIME_FAILURE | {"title": RUNTIME_FAILURE["title"] + "!"})
        assert second["incident_id"] != first["incident_id"]
        assert second["fingerprint"] != first["fingerprint"]

        retriaged = await call_ok(agent, "triage_draft", draft_id=draft_id)
        assert retriaged["evidence_changed"] is True
        assert retriaged["evidence_digest"] != approved_digest
        assert second["incident_id"] in json.dumps(retriaged["triage_run"]["duplicate_matches"])
        since = audit_head(monitor)

        refusal = await call_refused(agent, "publish_draft", draft_id=draft_id)
        detail = await call_ok(agent, "get_draft", draft_id=draft_id)

    assert "approval required" in refusal
    assert f"draft_id={draft_id}" in refusal
    assert {a["approval_id"]: a["status"] for a in detail["approvals"]} == {approval_id: "superseded"}
    assert detail["draft"]["status"] == "draft"
    assert receiver.request_count == 0
    assert [r.status.value for r in receipts_of(monitor, draft_id)] == ["blocked"]
    the_audit_row(monitor, since, "publish_draft", "approval_required")


async def test_an_expired_approval_is_refused_naming_the_expiry(
    monitor: Monitor, receiver: WebhookReceiver, clock: FakeClock
) -> None:
    async with agent_and_operator(monitor) as (agent, operator):
        draft_id = (await call_ok(agent, "report_incident", **RUNTIME_FAILURE))["draft_id"]
        approval_id = await approve(agent, operator, draft_id)
        clock.advance(minutes=monitor.config.approval.ttl_minutes + 1)
        before, since = state(monitor), audit_head(monitor)

        refusal = await call_refused(agent, "publish_draft", draft_id=draft_id)

        assert "expired" in refusal and approval_id in refusal
        assert f"call request_approval with draft_id={draft_id}" in refusal
        assert receiver.request_count == 0
        the_audit_row(monitor, since, "publish_draft", "approval_required")
        after = state(monitor)
        assert after["approvals"] == before["approvals"] and after["drafts"] == before["drafts"]
        assert [r.status.value for r in receipts_of(monitor, draft_id)] == ["blocked"]

        # The advice works: a fresh request replaces the expired approval.
        renewed = await call_ok(agent, "request_approval", draft_id=draft_id, reason="Still failing.")
        assert renewed["approval"]["approval_id"] != approval_id
        assert renewed["approval"]["status"] == "pending"


async def test_a_denied_draft_cannot_be_published_or_sent_for_approval_again(
    monitor: Monitor, receiver: WebhookReceiver
) -> None:
    async with agent_and_operator(monitor) as (agent, operator):
        draft_id = (await call_ok(agent, "report_incident", **RUNTIME_FAILURE))["draft_id"]
        approval_id = await request(agent, draft_id)
        denied = await call_ok(
            operator, "decide_approval", approval_id=approval_id, decision="deny", note="Not actionable."
        )
        assert denied["draft_status"] == "denied"
        assert denied["approval"]["status"] == "denied"
        assert denied["approval"]["decision_note"] == "Not actionable."
        before, since = state(monitor), audit_head(monitor)

        publish_refusal = await call_refused(agent, "publish_draft", draft_id=draft_id)
        again_refusal = await call_refused(agent, "request_approval", draft_id=draft_id, reason="Please reconsider.")

    assert publish_refusal.startswith("approval_required")
    assert "denied" in again_refusal
    assert receiver.request_count == 0
    after = state(monitor)
    assert after["drafts"] == before["drafts"] and after["approvals"] == before["approvals"]
    the_audit_row(monitor, since, "publish_draft", "approval_required")
    the_audit_row(monitor, since, "request_approval", "rejected")


async def test_publish_refusal_for_a_denied_draft_says_it_was_denied(monitor: Monitor) -> None:
    async with agent_and_operator(monitor) as (agent, operator):
        draft_id = (await call_ok(agent, "report_incident", **RUNTIME_FAILURE))["draft_id"]
        approval_id = await request(agent, draft_id)
        await call_ok(operator, "decide_approval", approval_id=approval_id, decision="deny", note="Not actionable.")

        refusal = await call_refused(agent, "publish_draft", draft_id=draft_id)

    assert "denied" in refusal
    assert "call request_approval" not in refusal


# --- invalid input ---------------------------------------------------------------------------------

ArgumentsFor = Callable[[Limits], dict[str, Any]]
INVALID_INPUTS: list[tuple[str, str, ArgumentsFor]] = [
    ("report_incident", "title", lambda _: {k: v for k, v in RUNTIME_FAILURE.items() if k != "title"}),
    ("report_incident", "title", lambda _: RUNTIME_FAILURE | {"title": ""}),
    ("report_incident", "title", lambda limits: RUNTIME_FAILURE | {"title": "x" * (limits.max_title_chars + 1)}),
    ("report_incident", "level", lambda _: RUNTIME_FAILURE | {"level": "sometimes"}),
    ("report_incident", "risk_level", lambda _: RUNTIME_FAILURE | {"risk_level": "severe"}),
    ("report_incident", "route_tags", lambda _: RUNTIME_FAILURE | {"route_tags": "runtime-failure"}),
    ("list_incidents", "limit", lambda _: {"limit": 0}),
    ("decide_approval", "decision", lambda _: {"approval_id": "apr_0", "decision": "maybe", "note": "hmm"}),
]
INVALID_INPUT_IDS = [
    "missing-title",
    "empty-title",
    "long-title",
    "level",
    "risk_level",
    "route_tags",
    "limit=0",
    "maybe",
]


def caller_for(tool: str) -> Principal:
    return OPERATOR if tool == "decide_approval" else AGENT


@pytest.mark.parametrize(("tool", "field", "arguments"), INVALID_INPUTS, ids=INVALID_INPUT_IDS)
async def test_invalid_input_is_refused_naming_the_field(
    monitor: Monitor, tool: str, field: str, arguments: ArgumentsFor
) -> None:
    before, since = state(monitor), audit_head(monitor)
    async with mcp_client(monitor, caller_for(tool)) as client:
        refusal = await call_refused(client, tool, **arguments(monitor.config.limits))

    assert refusal.startswith("invalid_input")
    assert f"{field}:" in refusal
    assert state(monitor) == before
    the_audit_row(monitor, since, tool, "rejected")


CANARY_INPUTS = [
    pytest.param(
        "report_incident",
        lambda limits: RUNTIME_FAILURE | {"title": f"{GITHUB_CANARY} " + "x" * limits.max_title_chars},
        id="long-title",
    ),
    pytest.param("report_incident", lambda _: RUNTIME_FAILURE | {"risk_level": GITHUB_CANARY}, id="risk_level"),
    pytest.param("report_incident", lambda _: RUNTIME_FAILURE | {"route_tags": OPENAI_CANARY}, id="route_tags"),
    pytest.param("report_incident", lambda _: RUNTIME_FAILURE | {"source": GITHUB_CANARY * 6}, id="long-source"),
    pytest.param("list_incidents", lambda _: {"limit": GITHUB_CANARY}, id="limit"),
    pytest.param(
        "decide_approval",
        lambda _: {"approval_id": "apr_0", "decision": OPENAI_CANARY, "note": "hmm"},
        id="decision",
    ),
    pytest.param(
        "report_incident",
        lambda _: RUNTIME_FAILURE | {"level": GITHUB_CANARY},
        id="report-level",
    ),
    pytest.param(
        "preview_route",
        lambda _: {"level": GITHUB_CANARY},
        id="preview-level",
    ),
]


@pytest.mark.parametrize(("tool", "arguments"), CANARY_INPUTS)
async def test_a_rejected_value_is_echoed_neither_to_the_caller_nor_to_the_audit_log(
    monitor: Monitor, tool: str, arguments: ArgumentsFor
) -> None:
    before = state(monitor)
    async with mcp_client(monitor, caller_for(tool)) as client:
        refusal = await call_refused(client, tool, **arguments(monitor.config.limits))

    assert refusal.startswith("invalid_input")
    assert state(monitor) == before
    assert_no_canary("the error text", refusal)
    assert_no_canary("the audit log", all_audit_text(monitor))


# --- secrets ---------------------------------------------------------------------------------------


def secret_laden_report() -> dict[str, Any]:
    return RUNTIME_FAILURE | {
        "title": f"Linear sync failed: token {GITHUB_CANARY} rejected",
        "detail": f"Request used Authorization: Bearer {OPENAI_CANARY} and got 401.",
        "context": {
            "headers": {"Authorization": f"Bearer {GITHUB_CANARY}"},
            "db": f"postgresql://u:{OPENAI_CANARY}@h/db",
            "attempts": [{"api_key": OPENAI_CANARY, "status": 401}],
        },
        "evidence_refs": [f"https://ci.example.com/logs?token={GITHUB_CANARY}", f"note: key {OPENAI_CANARY}"],
    }


async def test_reported_secrets_never_leave_the_intake(
    monitor: Monitor, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    outputs: list[tuple[str, CallToolResult]] = []

    async def record(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
        result = await client.call_tool(tool, arguments)
        assert not result.is_error, f"{tool} refused: {error_text(result)}"
        assert result.structured_content is not None
        outputs.append((tool, result))
        return result.structured_content

    async with agent_and_operator(monitor) as (agent, operator):
        reported = await record(agent, "report_incident", **secret_laden_report())
        incident_id, draft_id = reported["incident_id"], reported["draft_id"]
        assert {"title", "detail", "context", "evidence_refs"} <= set(reported["redacted_fields"])

        await record(agent, "get_incident", incident_id=incident_id)
        await record(agent, "list_incidents")
        await record(agent, "list_drafts")
        detail = await record(agent, "get_draft", draft_id=draft_id)
        assert "[REDACTED]" in detail["draft"]["body"]
        await record(agent, "triage_draft", draft_id=draft_id)
        await record(agent, "preview_route", draft_id=draft_id)
        refused = await agent.call_tool("publish_draft", {"draft_id": draft_id})
        assert refused.is_error
        outputs.append(("publish_draft (refused)", refused))
        requested = await record(agent, "request_approval", draft_id=draft_id, reason="Every sync fails.")
        approval_id = requested["approval"]["approval_id"]
        await record(operator, "decide_approval", approval_id=approval_id, decision="approve", note="Checked.")
        await record(agent, "publish_draft", draft_id=draft_id)
        await record(agent, "list_receipts")
        await record(agent, "get_draft", draft_id=draft_id)
        await record(agent, "get_incident", incident_id=incident_id)
        await record(agent, "get_status")

    for tool, result in outputs:
        assert_no_canary(f"{tool} output", error_text(result))
        assert_no_canary(f"{tool} structured output", json.dumps(result.structured_content))

    [delivery] = receiver.deliveries
    assert_no_canary("the webhook delivery", delivery.body)
    assert "[REDACTED]" in delivery.payload["data"]["title"]

    assert_no_canary("the audit log", all_audit_text(monitor))
    if monitor.engine.dialect.name != "sqlite":  # PostgreSQL: every row of every table, as stored
        for table in SQLModel.metadata.sorted_tables:
            assert_no_canary(f"table {table.name}", repr(raw_sql(monitor, f"SELECT * FROM {table.name}")))  # noqa: S608
    monitor.close()  # let SQLite settle; the WAL file is read too if it is still there
    database_files = sorted(monitor.data_dir.glob(f"{DATABASE_FILENAME}*"))
    assert database_files or monitor.engine.dialect.name != "sqlite"
    for path in database_files:
        assert_no_canary(path.name, path.read_bytes())
    assert caplog.records, "expected some log records at DEBUG"
    assert_no_canary("the logs", caplog.text)


async def test_a_secret_in_run_id_is_not_written_to_the_audit_log(monitor: Monitor) -> None:
    async with mcp_client(monitor, AGENT) as agent:
        reported = await call_ok(agent, "report_incident", **RUNTIME_FAILURE, run_id=f"token={GITHUB_CANARY}")
    assert "run_id" in reported["redacted_fields"]
    assert_no_canary("the audit log", all_audit_text(monitor))


# --- credentials -----------------------------------------------------------------------------------


async def test_a_token_revoked_mid_session_loses_every_tool(monitor: Monitor) -> None:
    created = create_token(monitor, OPERATOR, name="ci-agent", scopes=["read", "report", "triage"])
    resolve = stdio_principal(monitor, created.secret)

    async with mcp_client(monitor, resolve) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert {"report_incident", "triage_draft", "get_status"} <= tools
        reported = await call_ok(client, "report_incident", **RUNTIME_FAILURE)

        revoke_token(monitor, OPERATOR, "ci-agent")
        before, since = state(monitor), audit_head(monitor)

        assert (await client.list_tools()).tools == []
        refusal = await call_refused(client, "report_incident", **RUNTIME_FAILURE | {"title": "A new failure"})
        assert "permission denied" in refusal
        read_refusal = await call_refused(client, "get_incident", incident_id=reported["incident_id"])
        assert "permission denied" in read_refusal

    assert state(monitor) == before
    the_audit_row(monitor, since, "report_incident", "deny")
    the_audit_row(monitor, since, "get_incident", "deny")


async def test_a_tool_call_checks_the_credential_once_and_every_call_checks_it_again(monitor: Monitor) -> None:
    # The scope gate and the tool read one principal per call (a token lookup is a store read), and the next
    # call reads the committed state again: a token revoked between two calls refuses the second.
    created = create_token(monitor, OPERATOR, name="ci-agent", scopes=["read", "report"])
    resolve = stdio_principal(monitor, created.secret)
    checks: list[str] = []

    def counted() -> Principal:
        checks.append("checked")
        return resolve()

    async with mcp_client(monitor, counted) as client:
        await client.list_tools()  # the client's schemas for checking results: listed once, checked once
        assert len(checks) == 1
        await call_ok(client, "report_incident", **RUNTIME_FAILURE)
        assert len(checks) == 2
        await call_ok(client, "get_status")
        assert len(checks) == 3

        revoke_token(monitor, OPERATOR, "ci-agent")
        refusal = await call_refused(client, "report_incident", **RUNTIME_FAILURE | {"title": "A new failure"})

    assert "permission denied" in refusal and "revoked" in refusal
    assert len(checks) == 4


# --- approvals and resolution: clear errors --------------------------------------------------------


async def test_deciding_an_approval_that_is_not_pending_is_refused(monitor: Monitor) -> None:
    async with agent_and_operator(monitor) as (agent, operator):
        draft_id = (await call_ok(agent, "report_incident", **RUNTIME_FAILURE))["draft_id"]
        approval_id = await approve(agent, operator, draft_id)
        before, since = state(monitor), audit_head(monitor)

        refusal = await call_refused(
            operator, "decide_approval", approval_id=approval_id, decision="deny", note="Changed my mind."
        )
        missing = await call_refused(
            operator, "decide_approval", approval_id="apr_" + "0" * 16, decision="deny", note="x"
        )

    assert approval_id in refusal and "approved, not pending" in refusal
    assert missing.startswith("not_found") and "approval_id" in missing
    assert state(monitor) == before
    rows = [r for r in audit_since(monitor, since) if r.action == "decide_approval"]
    assert [r.decision.value for r in rows] == ["rejected", "rejected"]


@pytest.mark.parametrize("note", ["", "   "], ids=["empty", "blank"])
async def test_resolving_needs_a_resolution_note(monitor: Monitor, note: str) -> None:
    async with agent_and_operator(monitor) as (agent, operator):
        incident_id = (await call_ok(agent, "report_incident", **RUNTIME_FAILURE))["incident_id"]
        before, since = state(monitor), audit_head(monitor)

        refusal = await call_refused(operator, "resolve_incident", incident_id=incident_id, resolution_note=note)

    assert refusal.startswith("invalid_input") and "resolution_note" in refusal
    assert state(monitor) == before
    the_audit_row(monitor, since, "resolve_incident", "rejected")


async def test_resolving_twice_is_refused_and_keeps_the_first_resolution(monitor: Monitor) -> None:
    async with agent_and_operator(monitor) as (agent, operator):
        incident_id = (await call_ok(agent, "report_incident", **RUNTIME_FAILURE))["incident_id"]
        first = await call_ok(operator, "resolve_incident", incident_id=incident_id, resolution_note="Rotated key.")
        before, since = state(monitor), audit_head(monitor)

        refusal = await call_refused(operator, "resolve_incident", incident_id=incident_id, resolution_note="Again.")
        incident = (await call_ok(operator, "get_incident", incident_id=incident_id))["incident"]

    assert refusal.startswith("invalid_transition")
    assert incident_id in refusal and "resolved" in refusal
    assert incident["resolution_note"] == first["resolution_note"] == "Rotated key."
    assert incident["resolved_at"] == first["resolved_at"]
    assert state(monitor) == before
    the_audit_row(monitor, since, "resolve_incident", "rejected")
