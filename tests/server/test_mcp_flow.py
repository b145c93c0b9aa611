"""The governed flow through the MCP tools, as an agent and an operator live it (in-memory clients).

Two ``mcp.Client`` sessions share one monitor (a real SQLite file): the agent's and the operator's,
each resolving to its own principal, so approvals really come from a different principal.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client

from incident_monitor.policy.principal import Principal
from incident_monitor.policy.scopes import ALL_SCOPES, READ
from incident_monitor.server.tools import TOOL_ANNOTATIONS
from incident_monitor.service.monitor import Monitor
from support import mcp_helpers
from support.mcp_helpers import LINT_WARNING, agent_and_operator, call_ok, call_refused, mcp_client
from support.monitors import AGENT, OPERATOR, WEBHOOK_SECRET_VARIABLE, MonitorFactory, flow_config, principal
from support.receivers import WebhookReceiver, delivery_id_for

pytestmark = pytest.mark.anyio

READ_TOOLS = {
    "get_status",
    "list_incidents",
    "get_incident",
    "list_drafts",
    "get_draft",
    "list_receipts",
    "list_sources",
    "get_code_change",
    "list_code_changes",
}
# Governance evidence is read-only (probes and the report run against an in-memory copy).
GOVERNANCE_TOOLS = {
    "get_authority_inventory",
    "run_posture_checks",
    "run_assessment_probes",
    "build_assessment_report",
    "build_deployment_cards",
}
# The shared runtime failure, from one run with its log.
RUNTIME_FAILURE: dict[str, Any] = {
    **mcp_helpers.RUNTIME_FAILURE,
    "run_id": "run-42",
    "evidence_refs": ["runs/run-42/log.txt"],
}


# --- helpers ---------------------------------------------------------------------------------------


async def visible_tools(monitor: Monitor, who: Principal) -> set[str]:
    async with mcp_client(monitor, who) as client:
        return {tool.name for tool in (await client.list_tools()).tools}


async def approve(agent: Client, operator: Client, draft_id: str) -> dict[str, Any]:
    """The agent asks, the operator (a different principal) approves; returns the decided approval."""
    requested = await call_ok(
        agent, "request_approval", draft_id=draft_id, reason="Every run fails; on-call must know."
    )
    decided = await call_ok(
        operator,
        "decide_approval",
        approval_id=requested["approval"]["approval_id"],
        decision="approve",
        note="Evidence checked; publish to on-call.",
    )
    return decided["approval"]


def telemetry_lines(monitor: Monitor) -> list[dict[str, Any]]:
    path = monitor.data_dir / "telemetry.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def schema_properties(schema: Any) -> set[str]:
    """Every property name anywhere in a JSON schema (nested models and $defs included)."""
    found: set[str] = set()
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "properties" and isinstance(value, dict):
                found.update(value)
            found |= schema_properties(value)
    elif isinstance(schema, list):
        for value in schema:
            found |= schema_properties(value)
    return found


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def monitor(make_monitor: MonitorFactory, receiver: WebhookReceiver) -> Monitor:
    return make_monitor(flow_config(receiver.url))


# --- the safe sequence -----------------------------------------------------------------------------


async def test_safe_sequence_publishes_once_with_a_complete_receipt(
    monitor: Monitor, receiver: WebhookReceiver
) -> None:
    async with agent_and_operator(monitor) as (agent, operator):
        status = await call_ok(agent, "get_status")
        assert status["readiness"]["ingest_ready"] and status["readiness"]["publish_ready"]
        assert status["caller"]["principal"] == AGENT.name
        assert {d["destination_id"]: d["ready"] for d in status["destinations"]} == {
            "ops-webhook": True,
            "telemetry": True,
        }

        # Preview from flat fields, before anything is reported.
        preview = await call_ok(
            agent, "preview_route", **{k: RUNTIME_FAILURE[k] for k in ("route_tags", "level", "source", "event")}
        )
        assert preview["route_id"] == "runtime-failures"
        assert preview["destination_id"] == "ops-webhook"
        assert preview["destination_kind"] == "webhook"
        assert preview["approval_required"] is True
        assert preview["blocked"] is False and preview["blocked_reasons"] == []

        reported = await call_ok(agent, "report_incident", **RUNTIME_FAILURE)
        incident_id, draft_id = reported["incident_id"], reported["draft_id"]
        assert reported["status"] == "open" and reported["deduplicated"] is False
        assert draft_id in reported["next_step"]

        drafts = await call_ok(agent, "list_drafts", incident_id=incident_id)
        assert [(d["draft_id"], d["status"]) for d in drafts["drafts"]] == [(draft_id, "draft")]

        detail = await call_ok(agent, "get_draft", draft_id=draft_id)
        assert detail["draft"]["incident_id"] == incident_id
        assert detail["draft"]["evidence"]["incident"]["title"] == RUNTIME_FAILURE["title"]

        triage = await call_ok(agent, "triage_draft", draft_id=draft_id)
        assert triage["draft_id"] == draft_id and triage["triage_run"]["triage_run_id"]
        assert triage["draft_status"] == "draft"
        assert triage["next_step"] == f"call request_approval with draft_id={draft_id} and a reason"
        digest = triage["evidence_digest"]

        refusal = await call_refused(agent, "publish_draft", draft_id=draft_id)
        assert "approval required" in refusal
        assert f"call request_approval with draft_id={draft_id}" in refusal
        assert receiver.deliveries == []

        requested = await call_ok(agent, "request_approval", draft_id=draft_id, reason="Every run fails.")
        approval_id = requested["approval"]["approval_id"]
        assert requested["approval"]["status"] == "pending"
        assert requested["approval"]["requested_by"] == AGENT.name
        assert requested["approval"]["evidence_digest"] == digest
        assert requested["approval"]["destination_id"] == "ops-webhook"
        assert requested["draft_status"] == "approval_required"

        decided = await call_ok(
            operator, "decide_approval", approval_id=approval_id, decision="approve", note="Evidence checked."
        )
        assert decided["approval"]["status"] == "approved"
        assert decided["approval"]["decided_by"] == OPERATOR.name != AGENT.name
        assert decided["draft_status"] == "approved"

        published = await call_ok(agent, "publish_draft", draft_id=draft_id)
        receipt = published["receipt"]
        assert published["reused"] is False and published["draft_status"] == "published"

        [delivery] = receiver.deliveries
        assert receiver.rejected == []
        assert delivery.webhook_id == receipt["idempotency_key"]
        assert delivery.payload["data"]["evidence_digest"] == digest
        assert delivery.payload["data"]["draft_id"] == draft_id

        assert receipt["draft_id"] == draft_id and receipt["incident_id"] == incident_id
        assert receipt["destination_id"] == "ops-webhook"
        assert receipt["destination_kind"] == "webhook"
        assert receipt["route_id"] == "runtime-failures"
        assert "runtime-failures" in receipt["match_reason"]
        assert receipt["status"] == "published"
        assert receipt["external_id"] == delivery_id_for(receipt["idempotency_key"])
        assert receipt["evidence_digest"] == digest
        assert receipt["idempotency_key"]
        assert receipt["attempt_count"] == 1
        assert receipt["approval_id"] == approval_id
        assert receipt["error"] is None

        receipts = await call_ok(agent, "list_receipts", draft_id=draft_id)
        by_status = {r["status"]: r for r in receipts["receipts"]}
        # The refused attempt left its own receipt; the publish is the other one.
        assert sorted(by_status) == ["blocked", "published"]
        assert by_status["published"]["receipt_id"] == receipt["receipt_id"]

        assert (await call_ok(agent, "get_incident", incident_id=incident_id))["incident"]["status"] == "published"
        final = await call_ok(agent, "get_draft", draft_id=draft_id)
        assert final["draft"]["status"] == "published"
        assert final["draft"]["evidence_digest"] == receipt["evidence_digest"]
        assert [a["status"] for a in final["approvals"]] == ["used"]


async def test_publishing_again_returns_the_same_receipt_without_a_second_delivery(
    monitor: Monitor, receiver: WebhookReceiver
) -> None:
    async with agent_and_operator(monitor) as (agent, operator):
        draft_id = (await call_ok(agent, "report_incident", **RUNTIME_FAILURE))["draft_id"]
        await approve(agent, operator, draft_id)
        first = await call_ok(agent, "publish_draft", draft_id=draft_id)

        again = await call_ok(agent, "publish_draft", draft_id=draft_id)

        assert again["reused"] is True
        assert again["receipt"] == first["receipt"]
        assert len(receiver.deliveries) == 1
        assert receiver.unique_webhook_ids() == {first["receipt"]["idempotency_key"]}
        receipts = (await call_ok(agent, "list_receipts", draft_id=draft_id))["receipts"]
        assert [r["receipt_id"] for r in receipts] == [first["receipt"]["receipt_id"]]


# --- the tool contract -----------------------------------------------------------------------------

# Identifiers each tool's output must carry under their contract names (DESIGN.md).
EXPECTED_IDS: dict[str, set[str]] = {
    "get_status": {"destination_id"},
    "report_incident": {"incident_id", "draft_id"},
    "list_incidents": {"incident_id"},
    "get_incident": {"incident_id", "draft_id"},
    "list_drafts": {"draft_id", "incident_id"},
    "get_draft": {"draft_id", "incident_id", "approval_id", "destination_id"},
    "triage_draft": {"draft_id", "triage_run_id"},
    "preview_route": {"destination_id", "route_id"},
    "request_approval": {"approval_id", "draft_id", "destination_id"},
    "decide_approval": {"approval_id", "draft_id", "destination_id"},
    "publish_draft": {"receipt_id", "draft_id", "incident_id", "destination_id", "route_id", "approval_id"},
    "list_receipts": {"receipt_id", "draft_id", "destination_id"},
    "resolve_incident": {"incident_id"},
    "get_authority_inventory": {"destination_id", "route_id"},
    "run_posture_checks": {"rule_id"},
    "run_assessment_probes": {"probe_id"},
    "build_assessment_report": {"destination_id", "route_id", "rule_id", "probe_id", "card_id"},
    "build_deployment_cards": {"card_id"},
    "list_sources": {"log_source_id"},
    "request_code_change": {"draft_id", "run_id", "destination_id"},
    "follow_up_code_change": {"draft_id", "run_id", "destination_id"},
    "stop_code_change": {"run_id", "incident_id"},
    "get_code_change": {"run_id", "incident_id"},
    "list_code_changes": {"run_id", "incident_id"},
}
# Every *_id an output may hold: the contract names plus a few that are not about these records.
KNOWN_ID_FIELDS = {
    # governance evidence: audit subjects, intake keys and their sources, findings, probes, cards
    "subject_id",
    "timeline_run_id",
    "key_id",
    "source_id",
    "rule_id",
    "probe_id",
    "card_id",
    "default_destination_id",
    "incident_id",
    "draft_id",
    "approval_id",
    "receipt_id",
    "destination_id",
    "route_id",
    "triage_run_id",
    "used_by_receipt_id",
    "external_id",
    "project_id",
    "run_id",
    "session_id",
    "last_run_id",
    "last_session_id",
    "log_source_id",
    "downstream_id",  # a guarded downstream MCP server ([[downstream]] id)
}


async def test_every_tool_declares_all_annotations_and_an_output_schema(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor()
    async with mcp_client(monitor, principal("everything", *ALL_SCOPES)) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}

    assert set(tools) == set(TOOL_ANNOTATIONS) == set(EXPECTED_IDS)
    for name, tool in tools.items():
        hints = tool.annotations
        assert hints is not None, name
        for hint in ("read_only_hint", "destructive_hint", "idempotent_hint", "open_world_hint"):
            assert getattr(hints, hint) is not None, f"{name} leaves {hint} unset"
        assert tool.output_schema is not None, f"{name} has no output schema"

        outputs = schema_properties(tool.output_schema)
        assert EXPECTED_IDS[name] <= outputs, f"{name} output lacks {EXPECTED_IDS[name] - outputs}"
        id_like = {p for p in outputs | schema_properties(tool.input_schema) if p == "id" or p.endswith(("_id", "Id"))}
        assert id_like <= KNOWN_ID_FIELDS, f"{name} names identifiers off-contract: {id_like - KNOWN_ID_FIELDS}"

    # The design's table: reads are read-only, publish reaches the outside world and is idempotent.
    for name in READ_TOOLS | GOVERNANCE_TOOLS | {"preview_route"}:
        assert tools[name].annotations.read_only_hint is True, name  # type: ignore[union-attr]
    for name in set(tools) - READ_TOOLS - GOVERNANCE_TOOLS - {"preview_route"}:
        assert tools[name].annotations.read_only_hint is False, name  # type: ignore[union-attr]
    publish = tools["publish_draft"].annotations
    assert publish is not None and publish.open_world_hint is True and publish.idempotent_hint is True
    report = tools["report_incident"].annotations
    assert report is not None and report.destructive_hint is False and report.idempotent_hint is True


async def test_tools_list_shows_each_principal_only_what_its_scopes_allow(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor()

    agent_tools = await visible_tools(monitor, AGENT)
    assert {"report_incident", "publish_draft", "request_approval", "triage_draft"} <= agent_tools
    assert not agent_tools & {"decide_approval", "resolve_incident"}

    operator_tools = await visible_tools(monitor, OPERATOR)
    assert {"decide_approval", "resolve_incident"} <= operator_tools
    assert not operator_tools & {"report_incident", "publish_draft"}

    assert await visible_tools(monitor, principal("reader", READ)) == READ_TOOLS
    assert await visible_tools(monitor, principal("nobody")) == set()


# --- routing: preview and publish agree ------------------------------------------------------------


async def test_a_route_that_needs_no_approval_publishes_to_telemetry(monitor: Monitor) -> None:
    async with mcp_client(monitor, AGENT) as agent:
        reported = await call_ok(agent, "report_incident", **LINT_WARNING)
        draft_id = reported["draft_id"]
        assert reported["severity"] == "medium"

        preview = await call_ok(agent, "preview_route", draft_id=draft_id)
        assert preview["destination_id"] == "telemetry" and preview["route_id"] is None
        assert preview["approval_required"] is False and preview["blocked"] is False

        published = await call_ok(agent, "publish_draft", draft_id=draft_id)

    receipt = published["receipt"]
    assert receipt["status"] == "published"
    assert receipt["destination_id"] == "telemetry" and receipt["destination_kind"] == "telemetry"
    assert receipt["approval_id"] is None
    assert receipt["attempt_count"] == 1
    [line] = telemetry_lines(monitor)
    assert line["idempotency_key"] == receipt["idempotency_key"]
    assert line["draft_id"] == draft_id
    assert line["evidence_digest"] == receipt["evidence_digest"]


async def test_preview_of_a_draft_is_what_publish_enforces(monitor: Monitor, receiver: WebhookReceiver) -> None:
    async with agent_and_operator(monitor) as (agent, operator):
        draft_id = (await call_ok(agent, "report_incident", **RUNTIME_FAILURE))["draft_id"]
        preview = await call_ok(agent, "preview_route", draft_id=draft_id)
        assert preview["approval_required"] is True and preview["blocked"] is False

        refusal = await call_refused(agent, "publish_draft", draft_id=draft_id)
        assert "approval required" in refusal
        for reason in preview["approval_reasons"]:
            assert reason in refusal

        await approve(agent, operator, draft_id)
        assert (await call_ok(agent, "preview_route", draft_id=draft_id)) == preview
        receipt = (await call_ok(agent, "publish_draft", draft_id=draft_id))["receipt"]

    assert (receipt["destination_id"], receipt["destination_kind"], receipt["route_id"], receipt["match_reason"]) == (
        preview["destination_id"],
        preview["destination_kind"],
        preview["route_id"],
        preview["match_reason"],
    )
    assert len(receiver.deliveries) == 1


async def test_a_destination_that_is_not_ready_blocks_preview_and_publish_alike(
    monitor: Monitor, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with mcp_client(monitor, AGENT) as agent:
        draft_id = (await call_ok(agent, "report_incident", **RUNTIME_FAILURE))["draft_id"]
        monkeypatch.delenv(WEBHOOK_SECRET_VARIABLE)

        preview = await call_ok(agent, "preview_route", draft_id=draft_id)
        assert preview["blocked"] is True
        assert preview["destination_id"] == "ops-webhook"
        assert any(WEBHOOK_SECRET_VARIABLE in reason for reason in preview["blocked_reasons"])

        refusal = await call_refused(agent, "publish_draft", draft_id=draft_id)
        assert refusal.startswith("publish_blocked")
        for reason in preview["blocked_reasons"]:
            assert reason in refusal

        # Nothing to approve either: the agent is sent to fix the destination first.
        assert WEBHOOK_SECRET_VARIABLE in await call_refused(agent, "request_approval", draft_id=draft_id, reason="x")

        [receipt] = (await call_ok(agent, "list_receipts", draft_id=draft_id))["receipts"]
        draft = (await call_ok(agent, "get_draft", draft_id=draft_id))["draft"]

    assert receipt["status"] == "blocked"
    assert receipt["destination_id"] == "ops-webhook"
    assert WEBHOOK_SECRET_VARIABLE in (receipt["error"] or "")
    assert draft["status"] == "draft"
    assert receiver.request_count == 0


# --- incident lifecycle ----------------------------------------------------------------------------


async def test_a_recurrence_reopens_a_resolved_incident_and_keeps_its_history(monitor: Monitor) -> None:
    async with agent_and_operator(monitor) as (agent, operator):
        first = await call_ok(agent, "report_incident", **LINT_WARNING, run_id="run-1")
        incident_id, old_draft = first["incident_id"], first["draft_id"]
        await call_ok(agent, "publish_draft", draft_id=old_draft)

        resolved = await call_ok(
            operator, "resolve_incident", incident_id=incident_id, resolution_note="Deprecated keys renamed."
        )
        assert resolved["status"] == "resolved"
        assert resolved["resolution_note"] == "Deprecated keys renamed."
        assert resolved["resolved_by"] == OPERATOR.name

        again = await call_ok(agent, "report_incident", **LINT_WARNING, run_id="run-2")
        assert again["incident_id"] == incident_id
        assert again["recurrence"] is True and again["deduplicated"] is True
        assert again["occurrence_count"] == 2
        assert again["status"] == "open"
        assert again["draft_id"] not in (None, old_draft)

        history = await call_ok(agent, "get_incident", incident_id=incident_id)
        receipts = await call_ok(agent, "list_receipts", incident_id=incident_id)

    assert history["incident"]["status"] == "open"
    assert history["incident"]["recurrence_count"] == 1
    drafts = {d["draft_id"]: d["status"] for d in history["drafts"]}
    assert drafts == {old_draft: "published", again["draft_id"]: "draft"}
    occurrences = sorted((o["run_id"], o["recurrence"]) for o in history["recent_occurrences"])
    assert occurrences == [("run-1", False), ("run-2", True)]
    assert [r["draft_id"] for r in receipts["receipts"]] == [old_draft]


async def test_the_same_report_twice_dedupes_into_one_incident_and_one_draft(monitor: Monitor) -> None:
    async with mcp_client(monitor, AGENT) as agent:
        first = await call_ok(agent, "report_incident", **RUNTIME_FAILURE | {"run_id": "run-1", "session_id": "s-1"})
        second = await call_ok(agent, "report_incident", **RUNTIME_FAILURE | {"run_id": "run-2", "session_id": "s-2"})
        incidents = (await call_ok(agent, "list_incidents"))["incidents"]
        drafts = (await call_ok(agent, "list_drafts"))["drafts"]
        history = await call_ok(agent, "get_incident", incident_id=first["incident_id"])

    assert second["incident_id"] == first["incident_id"]
    assert second["fingerprint"] == first["fingerprint"]
    assert second["deduplicated"] is True and second["recurrence"] is False
    assert second["occurrence_count"] == 2
    assert second["draft_id"] == first["draft_id"]
    assert [i["incident_id"] for i in incidents] == [first["incident_id"]]
    assert incidents[0]["occurrence_count"] == 2
    assert history["incident"]["last_run_id"] == "run-2"
    assert [d["draft_id"] for d in drafts] == [first["draft_id"]]
    assert sorted(o["session_id"] for o in history["recent_occurrences"]) == ["s-1", "s-2"]
