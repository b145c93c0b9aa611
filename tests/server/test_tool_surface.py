"""What an agent reads and is told: the size and shape of ``tools/list``, a reviewed snapshot of every
tool, one error shape, and next steps that always lead forward (issue 10, "agent-facing surface").

Snapshots live in tests/server/toolsnaps/<tool>.json (as github-mcp-server's ``__toolsnaps__``). After an
intended change to a tool's name, description, annotations or schemas, review the diff this test
prints and rewrite them with::

    UPDATE_TOOLSNAPS=1 .venv/bin/python -m pytest tests/server/test_tool_surface.py
"""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from incident_monitor.domain.code_change import CodeChangeStatus
from incident_monitor.domain.enums import DraftStatus, IncidentStatus, ReceiptStatus
from incident_monitor.policy.scopes import ALL_SCOPES
from incident_monitor.server.errors import ERROR_SHAPE, error_text
from incident_monitor.server.tool_schemas import SchemaCycleError, compact_schema
from incident_monitor.server.tools import TOOL_ANNOTATIONS, build_mcp_server
from incident_monitor.service import queries
from incident_monitor.service.monitor import Monitor
from support.mcp_helpers import LINT_WARNING, RUNTIME_FAILURE, agent_and_operator, call_ok, call_refused, mcp_client
from support.monitors import AGENT, MonitorFactory, flow_config, principal
from support.receivers import WebhookReceiver

pytestmark = pytest.mark.anyio

TOOLSNAPS = Path(__file__).parent / "toolsnaps"
UPDATE_HINT = "If the change is intended, review it, then run: UPDATE_TOOLSNAPS=1 .venv/bin/python -m pytest " + (
    "tests/server/test_tool_surface.py"
)
# The default agent's tools/list, in bytes of JSON (issue 10: 39.4 KB before; the target is 16 KB).
DEFAULT_AGENT_BUDGET = 16_000
EVERYTHING = principal("everything", *ALL_SCOPES)


async def listed_tools(monitor: Monitor, who: Any) -> list[dict[str, Any]]:
    """``tools/list`` as its JSON travels (camelCase keys, no nulls), over a real client."""
    async with mcp_client(monitor, who) as client:
        result = await client.list_tools()
    return [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in result.tools]


def wire_bytes(tools: list[dict[str, Any]]) -> int:
    return len(json.dumps({"tools": tools}, separators=(",", ":"), ensure_ascii=False).encode())


def snapshot_of(tool: dict[str, Any]) -> dict[str, Any]:
    keys = ("name", "description", "annotations", "inputSchema", "outputSchema")
    return {key: tool[key] for key in keys if key in tool}


def snapshot_text(snapshot: dict[str, Any]) -> str:
    return json.dumps(snapshot, indent=2, ensure_ascii=False) + "\n"


def keys_anywhere(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys_anywhere(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_anywhere(v)}
    return set()


# --- size and shape ---------------------------------------------------------------------------------


async def test_the_default_agent_tools_list_fits_the_budget(make_monitor: MonitorFactory) -> None:
    tools = await listed_tools(make_monitor(), AGENT)

    size = wire_bytes(tools)
    per_tool = {t["name"]: wire_bytes([t]) for t in tools}
    assert size <= DEFAULT_AGENT_BUDGET, f"tools/list is {size} bytes for the default agent: {per_tool}"
    # The default agent's tools (with list_sources, get_code_change and list_code_changes); a new one must fit too.
    assert len(tools) == 14


async def test_no_schema_uses_ref_or_defs(make_monitor: MonitorFactory) -> None:
    tools = await listed_tools(make_monitor(), EVERYTHING)

    assert {t["name"] for t in tools} == set(TOOL_ANNOTATIONS)
    for tool in tools:
        assert "outputSchema" in tool, f"{tool['name']} lost its output schema"
        for part in ("inputSchema", "outputSchema"):
            found = keys_anywhere(tool[part]) & {"$ref", "$defs", "definitions"}
            assert not found, f"{tool['name']} {part} uses {found}"
        assert tool["inputSchema"]["type"] == tool["outputSchema"]["type"] == "object"


async def test_list_tools_return_summaries_and_get_tools_the_details(make_monitor: MonitorFactory) -> None:
    tools = {t["name"]: t["outputSchema"] for t in await listed_tools(make_monitor(), AGENT)}

    def item_fields(tool: str, key: str) -> set[str]:
        return set(tools[tool]["properties"][key]["items"]["properties"])

    assert "detail" not in item_fields("list_incidents", "incidents")
    assert {"detail", "context", "evidence_refs"} <= set(tools["get_incident"]["properties"]["incident"]["properties"])
    assert not {"body", "evidence"} & item_fields("list_drafts", "drafts")
    assert {"body", "evidence", "evidence_digest"} <= set(tools["get_draft"]["properties"]["draft"]["properties"])
    assert not {"idempotency_key", "response_excerpt"} & item_fields("list_receipts", "receipts")
    assert {"idempotency_key", "match_reason"} <= set(tools["publish_draft"]["properties"]["receipt"]["properties"])


async def test_every_tool_matches_its_reviewed_snapshot(make_monitor: MonitorFactory) -> None:
    live = {t["name"]: snapshot_of(t) for t in await listed_tools(make_monitor(), EVERYTHING)}

    if os.environ.get("UPDATE_TOOLSNAPS") == "1":
        TOOLSNAPS.mkdir(exist_ok=True)
        for stale in set(p.stem for p in TOOLSNAPS.glob("*.json")) - set(live):
            (TOOLSNAPS / f"{stale}.json").unlink()
        for name, snapshot in live.items():
            (TOOLSNAPS / f"{name}.json").write_text(snapshot_text(snapshot))
        return

    problems: list[str] = []
    for name, snapshot in sorted(live.items()):
        path = TOOLSNAPS / f"{name}.json"
        if not path.exists():
            problems.append(f"{name}: no snapshot at {path.relative_to(TOOLSNAPS.parent.parent)}")
            continue
        expected, actual = path.read_text(), snapshot_text(snapshot)
        if expected != actual:
            diff = difflib.unified_diff(
                expected.splitlines(), actual.splitlines(), f"{name}.json (snapshot)", f"{name} (live)", lineterm=""
            )
            problems.append("\n".join(diff))
    for stale in sorted(set(p.stem for p in TOOLSNAPS.glob("*.json")) - set(live)):
        problems.append(f"{stale}: a snapshot for a tool the server no longer has")
    assert not problems, "tool surface changed without review:\n" + "\n\n".join(problems) + "\n\n" + UPDATE_HINT


def enums_anywhere(value: Any) -> set[tuple[Any, ...]]:
    if isinstance(value, dict):
        own = {tuple(value["enum"])} if isinstance(value.get("enum"), list) else set()
        return own | {e for v in value.values() for e in enums_anywhere(v)}
    if isinstance(value, list):
        return {e for v in value for e in enums_anywhere(v)}
    return set()


async def test_results_do_not_repeat_the_value_sets_the_read_tools_list(make_monitor: MonitorFactory) -> None:
    """Severities and incident and draft states are enums where an agent chooses one (the filters of the read
    tools); results name them as strings. Value sets that are no input stay enums in results."""
    tools = {t["name"]: t for t in await listed_tools(make_monitor(), AGENT)}
    severities = ("critical", "high", "medium", "low")
    draft_states = tuple(s.value for s in DraftStatus)
    incident_states = tuple(s.value for s in IncidentStatus)

    assert {severities, draft_states} <= enums_anywhere(tools["list_drafts"]["inputSchema"])
    assert {severities, incident_states} <= enums_anywhere(tools["list_incidents"]["inputSchema"])
    for tool in tools.values():
        repeated = enums_anywhere(tool["outputSchema"]) & {severities, draft_states, incident_states}
        assert not repeated, f"{tool['name']} repeats {repeated} in its result"
    assert tools["get_draft"]["outputSchema"]["properties"]["draft"]["properties"]["severity"] == {"type": "string"}
    receipt_states = tuple(s.value for s in ReceiptStatus)
    assert receipt_states in enums_anywhere(tools["list_receipts"]["outputSchema"])  # listed nowhere else
    run_states = tuple(s.value for s in CodeChangeStatus)
    assert enums_anywhere(tools["get_code_change"]["outputSchema"]) == {run_states}


async def test_an_id_is_checked_though_its_schema_shows_no_limit(monitor: Monitor) -> None:
    async with mcp_client(monitor, AGENT) as agent:
        schema = {t.name: t.input_schema for t in (await agent.list_tools()).tools}["get_draft"]
        too_long = await call_refused(agent, "get_draft", draft_id="d" * 101)
        empty = await call_refused(agent, "get_draft", draft_id="")

    assert schema["properties"]["draft_id"] == {"type": "string"}
    for text in (too_long, empty):
        assert text.startswith("invalid_input: get_draft arguments rejected")
        assert "d" * 101 not in text


# --- the schema post-processor ----------------------------------------------------------------------


def test_compaction_inlines_references_and_keeps_property_names_that_look_like_keywords() -> None:
    schema = {
        "$defs": {
            "Level": {"enum": ["low", "high"], "title": "Level", "type": "string"},
            "Item": {
                "properties": {
                    "title": {"title": "Title", "type": "string"},
                    "required": {"type": "boolean"},
                    "level": {"$ref": "#/$defs/Level", "description": "How bad."},
                },
                "required": ["title", "required", "level"],
                "title": "Item",
                "type": "object",
            },
        },
        "properties": {
            "items": {"items": {"$ref": "#/$defs/Item"}, "title": "Items", "type": "array"},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None, "title": "Note"},
        },
        "required": ["items"],
        "title": "Page",
        "type": "object",
    }

    as_input = compact_schema(schema)
    item = as_input["properties"]["items"]["items"]
    assert set(item["properties"]) == {"title", "required", "level"}
    assert item["properties"]["level"] == {"enum": ["low", "high"], "type": "string", "description": "How bad."}
    assert item["required"] == ["title", "required", "level"]
    assert as_input["properties"]["note"] == {"type": "string"}  # optional: simply left out, not "or null"
    assert "$defs" not in as_input and "title" not in as_input

    as_output = compact_schema(schema, output=True)
    assert as_output["type"] == "object" and "required" not in as_output
    assert as_output["properties"]["note"] == {"type": ["string", "null"]}
    assert as_output["properties"]["items"]["items"]["properties"]["level"] == {
        "enum": ["low", "high"],
        "description": "How bad.",
    }


def test_compaction_writes_a_listed_value_set_as_a_string_in_outputs_only() -> None:
    schema = {
        "$defs": {"Level": {"enum": ["low", "high"], "title": "Level", "type": "string"}},
        "properties": {
            "level": {"$ref": "#/$defs/Level"},
            "maybe": {"anyOf": [{"$ref": "#/$defs/Level"}, {"type": "null"}]},
            "mode": {"enum": ["a", "b"], "type": "string"},
        },
        "type": "object",
    }
    listed = frozenset({("low", "high")})

    as_output = compact_schema(schema, output=True, listed=listed)
    assert as_output["properties"] == {
        "level": {"type": "string"},
        "maybe": {"type": ["string", "null"]},
        "mode": {"enum": ["a", "b"]},
    }
    as_input = compact_schema(schema, listed=listed)
    assert as_input["properties"]["level"] == {"enum": ["low", "high"], "type": "string"}


def test_compaction_refuses_a_self_referencing_model() -> None:
    schema = {
        "$defs": {"Node": {"properties": {"child": {"$ref": "#/$defs/Node"}}, "type": "object"}},
        "properties": {"root": {"$ref": "#/$defs/Node"}},
        "type": "object",
    }
    with pytest.raises(SchemaCycleError, match="Node -> Node"):
        compact_schema(schema)


# --- one error shape --------------------------------------------------------------------------------


@pytest.fixture
def monitor(make_monitor: MonitorFactory, receiver: WebhookReceiver) -> Monitor:
    return make_monitor(flow_config(receiver.url))


async def test_every_refusal_has_the_shape_code_colon_message(monitor: Monitor) -> None:
    async with mcp_client(monitor, AGENT) as agent:
        refusals = {
            "service error": await call_refused(agent, "get_draft", draft_id="drf_" + "0" * 16),
            "missing scope": await call_refused(
                agent, "decide_approval", approval_id="apr_x", decision="approve", note="ok"
            ),
            "invalid arguments": await call_refused(agent, "list_incidents", limit=0),
            "unknown tool": await call_refused(agent, "delete_everything"),
        }

    # call_refused already asserts the shape; these are the codes and the next call each names.
    assert (
        refusals["service error"].startswith("not_found: draft_id: ")
        and "call list_drafts" in refusals["service error"]
    )
    assert refusals["missing scope"].startswith("insufficient_scope: ")
    assert refusals["invalid arguments"].startswith("invalid_input: list_incidents arguments rejected")
    assert refusals["unknown tool"].startswith("permission_denied: ") and "tools/list" in refusals["unknown tool"]
    for text in refusals.values():
        assert "Error executing tool" not in text


async def test_a_crash_inside_a_tool_is_an_internal_error_that_hides_the_cause(
    monitor: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database password is hunter2")

    monkeypatch.setattr(queries, "list_drafts", crash)
    async with mcp_client(monitor, AGENT) as agent:
        text = await call_refused(agent, "list_drafts")

    assert text.startswith("internal_error: list_drafts failed inside the server")
    assert "call get_status" in text
    assert "hunter2" not in text and "RuntimeError" not in text


def test_sdk_error_texts_are_reshaped_without_echoing_values() -> None:
    sdk_validation = "Error executing tool get_draft: 1 validation error for get_draftArguments\ndraft_id\n  ..."
    assert error_text("get_draft", sdk_validation).startswith("invalid_input: get_draft arguments rejected")
    assert error_text("get_draft", "Error executing tool get_draft: not_found: draft_id: no draft") == (
        "not_found: draft_id: no draft"
    )
    assert error_text("get_draft", "Error executing tool get_draft").startswith("internal_error: ")
    for text in ("free text without a code", "Error executing tool get_draft: Oops: secret=abc"):
        assert ERROR_SHAPE.match(error_text("get_draft", text))
        assert "abc" not in error_text("get_draft", text)


async def test_an_agent_refused_decide_approval_is_sent_to_request_approval(monitor: Monitor) -> None:
    async with mcp_client(monitor, AGENT) as agent:
        refusal = await call_refused(agent, "decide_approval", approval_id="apr_x", decision="approve", note="ok")

    assert "call request_approval" in refusal and "an operator decides" in refusal
    assert "token" not in refusal.split(". ", 1)[1]  # the advice is the call to make, not a credential to ask for


# --- next steps lead forward ------------------------------------------------------------------------

NEXT_CALL = re.compile(r"\bcall (\w+)")


def next_calls(step: str) -> list[str]:
    return NEXT_CALL.findall(step)


async def test_next_steps_walk_the_approval_flow_forward_and_never_repeat_the_call(monitor: Monitor) -> None:
    steps: list[tuple[str, str]] = []  # (the tool that answered, its next_step)
    async with agent_and_operator(monitor) as (agent, operator):
        reported = await call_ok(agent, "report_incident", **RUNTIME_FAILURE)
        draft_id = reported["draft_id"]
        steps.append(("report_incident", reported["next_step"]))
        steps.append(("get_draft", (await call_ok(agent, "get_draft", draft_id=draft_id))["next_step"]))
        steps.append(("triage_draft", (await call_ok(agent, "triage_draft", draft_id=draft_id))["next_step"]))
        steps.append(("get_draft", (await call_ok(agent, "get_draft", draft_id=draft_id))["next_step"]))
        requested = await call_ok(agent, "request_approval", draft_id=draft_id, reason="Every run fails.")
        steps.append(("request_approval", requested["next_step"]))
        decided = await call_ok(
            operator,
            "decide_approval",
            approval_id=requested["approval"]["approval_id"],
            decision="approve",
            note="Evidence checked.",
        )
        steps.append(("decide_approval", decided["next_step"]))
        published = await call_ok(agent, "publish_draft", draft_id=draft_id)
        steps.append(("publish_draft", published["next_step"]))
        steps.append(("get_draft", (await call_ok(agent, "get_draft", draft_id=draft_id))["next_step"]))

    assert [next_calls(step)[0] for _, step in steps] == [
        "triage_draft",  # after report_incident
        "triage_draft",  # get_draft of an untriaged draft
        "request_approval",  # triage knows the route needs approval
        "preview_route",  # get_draft of a triaged draft: the preview says what comes next
        "publish_draft",  # once the operator decided
        "publish_draft",
        "list_receipts",  # published: the receipt
        "list_receipts",
    ]
    for tool, step in steps:
        assert tool not in next_calls(step), f"{tool} tells the agent to call {tool} again: {step!r}"
        assert f"draft_id={draft_id}" in step


async def test_a_route_without_approval_goes_from_triage_straight_to_publish(monitor: Monitor) -> None:
    async with mcp_client(monitor, AGENT) as agent:
        draft_id = (await call_ok(agent, "report_incident", **LINT_WARNING))["draft_id"]
        triaged = await call_ok(agent, "triage_draft", draft_id=draft_id)

    assert triaged["next_step"] == f"call publish_draft with draft_id={draft_id}"


async def test_a_blocked_route_says_stop_and_why(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config(default_destination=None))  # nothing claims the lint warning
    async with mcp_client(monitor, AGENT) as agent:
        draft_id = (await call_ok(agent, "report_incident", **LINT_WARNING))["draft_id"]
        triaged = await call_ok(agent, "triage_draft", draft_id=draft_id)

    assert triaged["next_step"].startswith("stop: publishing is blocked (")
    assert "triage_draft" not in next_calls(triaged["next_step"])


async def test_a_failed_publish_points_to_the_receipt_and_readiness_before_a_retry(
    make_monitor: MonitorFactory, webhook_secret: str
) -> None:
    # Everything goes to the webhook, and nothing listens at its address.
    monitor = make_monitor(flow_config(routes=[], default_destination={"destination_id": "ops-webhook"}))
    async with agent_and_operator(monitor) as (agent, operator):
        draft_id = (await call_ok(agent, "report_incident", **LINT_WARNING))["draft_id"]
        requested = await call_ok(agent, "request_approval", draft_id=draft_id, reason="Lint noise, but tracked.")
        await call_ok(
            operator, "decide_approval", approval_id=requested["approval"]["approval_id"], decision="approve", note="ok"
        )
        failed = await call_ok(agent, "publish_draft", draft_id=draft_id)

    assert failed["draft_status"] == "publish_failed"
    assert next_calls(failed["next_step"])[0] == "list_receipts"
    assert "get_status" in failed["next_step"]


async def test_a_repeat_report_of_a_draft_further_along_points_to_that_draft(monitor: Monitor) -> None:
    async with agent_and_operator(monitor) as (agent, _):
        draft_id = (await call_ok(agent, "report_incident", **RUNTIME_FAILURE))["draft_id"]
        await call_ok(agent, "request_approval", draft_id=draft_id, reason="Every run fails.")
        again = await call_ok(agent, "report_incident", **RUNTIME_FAILURE)

    assert again["deduplicated"] is True
    assert next_calls(again["next_step"]) == ["get_draft"]
    assert "approval_required" in again["next_step"]


async def test_one_server_lists_each_caller_its_own_tools_on_every_request(make_monitor: MonitorFactory) -> None:
    """tools/list is built once and filtered once per scope set (server/scope_gate.py); on HTTP one server
    answers many principals in turn, so no caller may ever get another's list, nor a stale one."""
    monitor = make_monitor()
    reader, reporter = principal("reader", "read"), principal("reporter", "report")
    current = [reader]
    async with mcp_client(monitor, lambda: current[0]) as client:
        seen = []
        for who in (reader, reporter, reader, EVERYTHING, reporter, AGENT):
            current[0] = who
            seen.append(sorted(tool.name for tool in (await client.list_tools()).tools))
    assert seen[0] == seen[2] and "get_status" in seen[0] and "report_incident" not in seen[0]
    assert seen[1] == seen[4] == ["report_incident"]
    assert seen[3] == sorted(TOOL_ANNOTATIONS)
    # The default agent's list as listed by a server of its own (no cache shared with other callers).
    assert seen[5] == sorted(tool["name"] for tool in await listed_tools(make_monitor(), AGENT))


async def test_the_kept_tools_list_answers_each_protocol_era_in_its_own_shape(make_monitor: MonitorFactory) -> None:
    """Each protocol era has its own envelope (2026-07-28 results carry resultType, ttlMs, cacheScope): a list
    kept from one era's answer must never be served to a client of the other (server/scope_gate.py)."""
    server = build_mcp_server(make_monitor(), lambda: AGENT)
    names = []
    for mode in ("legacy", "auto", "legacy", "auto"):
        async with Client(server, mode=mode) as client:
            names.append(sorted(tool.name for tool in (await client.list_tools()).tools))
            # A structured result is checked against the tool's output schema, which the client gets from
            # tools/list: this call lists the tools again, as examples/call_tool.py does.
            await call_ok(client, "get_status")
    assert names[0] == names[1] == names[2] == names[3] and "report_incident" in names[0]
