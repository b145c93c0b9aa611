"""The downstream guard against real third-party MCP servers from npm (server-memory, server-filesystem)
over stdio, and one of our tests' MCPServers over Streamable HTTP.

Agents see and call the allowlisted read tools as ``<id>__<tool>``; every other downstream tool is refused
with the governed alternative, audited as a deny and recorded as one "blocked action" incident per tool and
caller, whose count rises with each retry.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from mcp import Client
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from sqlmodel import col, select

from incident_monitor.domain.models import AuditEvent, Incident
from incident_monitor.policy.principal import LOCAL_AGENT
from incident_monitor.server.http_app import bind_socket
from incident_monitor.service.downstream.guard import shape_result
from incident_monitor.service.monitor import Monitor
from support.mcp_helpers import call_refused, error_text, mcp_client
from support.monitors import MonitorFactory, flow_config, principal

pytestmark = pytest.mark.anyio

READER = principal("token:reader", "read", "report", "downstream_read")
NO_DOWNSTREAM = LOCAL_AGENT  # the default agent scopes: no downstream_read


def memory_downstream(node_bin: Path, memory_file: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "id": "memory",
        "command": str(node_bin / "mcp-server-memory"),
        "env": {"PATH": f"{node_bin}:/usr/bin:/bin", "MEMORY_FILE_PATH": str(memory_file)},
        "read_tools": ["read_graph", "search_nodes", "open_nodes"],
        **overrides,
    }


def filesystem_downstream(node_bin: Path, root: Path) -> dict[str, Any]:
    return {
        "id": "files",
        "command": str(node_bin / "mcp-server-filesystem"),
        "args": [str(root)],
        "env": {"PATH": f"{node_bin}:/usr/bin:/bin"},
        "read_tools": ["read_text_file", "list_directory"],
    }


def seeded_memory(path: Path) -> Path:
    entity = {"type": "entity", "name": "checkout", "entityType": "service", "observations": ["owned by payments"]}
    path.write_text(json.dumps(entity) + "\n")
    return path


@asynccontextmanager
async def serving(monitor: Monitor, who: Any) -> AsyncIterator[Client]:
    async with monitor.downstream.running(), mcp_client(monitor, who) as client:
        yield client


def audit_rows(monitor: Monitor, action: str) -> list[AuditEvent]:
    with monitor.session() as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.action == action).order_by(col(AuditEvent.seq))))


def blocked_incidents(monitor: Monitor) -> list[Incident]:
    with monitor.session() as session:
        rows = session.exec(select(Incident)).all()
    return [i for i in rows if i.title.startswith("Blocked action")]


async def test_memory_read_tools_are_listed_and_called_the_writes_are_not(
    make_monitor: MonitorFactory, node_bin: Path, tmp_path: Path
) -> None:
    memory = seeded_memory(tmp_path / "memory.jsonl")
    monitor = make_monitor(flow_config(downstream=[memory_downstream(node_bin, memory)]))
    async with serving(monitor, READER) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
        assert {"memory__read_graph", "memory__search_nodes", "memory__open_nodes"} <= set(listed)
        assert not any(n in listed for n in ("memory__create_entities", "memory__delete_entities"))
        tool = listed["memory__search_nodes"]
        assert tool.annotations is not None and tool.annotations.read_only_hint is True
        assert tool.annotations.destructive_hint is False
        assert "query" in tool.input_schema["properties"] and "$defs" not in json.dumps(tool.input_schema)

        result = await client.call_tool("memory__read_graph", {})
        assert not result.is_error, error_text(result)
        assert "checkout" in error_text(result)
    (row,) = audit_rows(monitor, "memory__read_graph")
    assert row.decision == "allow" and row.principal == READER.name


@pytest.mark.parametrize(
    "called", ["memory__create_entities", "create_entities", "memory_create_entities", "Memory.Create-Entities"]
)
async def test_a_write_by_any_name_is_refused_with_the_governed_alternative(
    make_monitor: MonitorFactory, node_bin: Path, tmp_path: Path, called: str
) -> None:
    memory = seeded_memory(tmp_path / "memory.jsonl")
    before = memory.read_text()
    monitor = make_monitor(flow_config(downstream=[memory_downstream(node_bin, memory)]))
    entities = [{"name": "evil", "entityType": "x", "observations": []}]
    async with serving(monitor, READER) as client:
        text = await call_refused(client, called, entities=entities)
    assert text.startswith("permission_denied:")
    assert "would mutate a destination" in text and "memory" in text
    assert "report_incident" in text and "publish_draft" in text
    assert memory.read_text() == before
    (row,) = audit_rows(monitor, "memory__create_entities")
    assert row.decision == "deny"


async def test_downstream_arguments_that_cannot_be_read_are_refused_before_the_downstream(
    make_monitor: MonitorFactory, node_bin: Path, tmp_path: Path
) -> None:
    memory = seeded_memory(tmp_path / "memory.jsonl")
    monitor = make_monitor(flow_config(downstream=[memory_downstream(node_bin, memory)]))
    deep: Any = "checkout"
    for _ in range(40):
        deep = [deep]
    async with serving(monitor, READER) as client:
        lone = await call_refused(client, "memory__search_nodes", query="checkout\ud800")
        nested = await call_refused(client, "memory__search_nodes", query="checkout", **{"made-up name": deep})
    assert lone.startswith("invalid_input:") and "query: holds text that is not valid Unicode" in lone
    assert "nests deeper than 32 levels" in nested and "made-up name" not in nested  # a name it does not list
    assert [row.decision for row in audit_rows(monitor, "memory__search_nodes")] == ["rejected", "rejected"]
    assert blocked_incidents(monitor) == []


async def test_a_looping_agent_raises_one_blocked_action_incident_with_a_count(
    make_monitor: MonitorFactory, node_bin: Path, tmp_path: Path
) -> None:
    memory = seeded_memory(tmp_path / "memory.jsonl")
    monitor = make_monitor(flow_config(downstream=[memory_downstream(node_bin, memory)]))
    async with serving(monitor, READER) as client:
        for attempt in range(1, 5):
            await call_refused(client, "memory__delete_entities", entityNames=["checkout"])
            (incident,) = blocked_incidents(monitor)
            assert incident.occurrence_count == attempt
    assert incident.severity == "medium"
    assert "memory__delete_entities" in incident.title
    assert len(audit_rows(monitor, "memory__delete_entities")) == 4
    assert "checkout" in memory.read_text()


async def test_without_downstream_read_nothing_downstream_is_seen_or_called(
    make_monitor: MonitorFactory, node_bin: Path, tmp_path: Path
) -> None:
    memory = seeded_memory(tmp_path / "memory.jsonl")
    monitor = make_monitor(flow_config(downstream=[memory_downstream(node_bin, memory)]))
    async with serving(monitor, NO_DOWNSTREAM) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert not any("__" in n for n in names)
        text = await call_refused(client, "memory__read_graph")
        assert text.startswith("insufficient_scope:") and "incident_monitor:downstream_read" in text
        text = await call_refused(client, "memory__create_entities", entities=[])
        assert "would mutate a destination" in text
    assert [r.decision for r in audit_rows(monitor, "memory__read_graph")] == ["deny"]


async def test_an_allowlisted_tool_the_server_marks_not_read_only_is_refused(
    make_monitor: MonitorFactory, node_bin: Path, tmp_path: Path
) -> None:
    memory = seeded_memory(tmp_path / "memory.jsonl")
    config = memory_downstream(node_bin, memory, read_tools=["read_graph", "create_*"])
    monitor = make_monitor(flow_config(downstream=[config]))
    async with serving(monitor, READER) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "memory__read_graph" in names and "memory__create_entities" not in names
        text = await call_refused(client, "memory__create_entities", entities=[])
        assert "marks it not read-only" in text
    connection = monitor.downstream.by_id["memory"]
    assert connection.tools.not_read_only == ["create_entities", "create_relations"]


async def test_a_missing_downstream_is_a_readiness_problem_not_a_crash(
    make_monitor: MonitorFactory, tmp_path: Path
) -> None:
    missing = {"id": "gone", "command": str(tmp_path / "no-such-server"), "read_tools": ["read"], "timeout_seconds": 5}
    monitor = make_monitor(flow_config(downstream=[missing]))
    async with serving(monitor, READER) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "get_status" in names and not any("__" in n for n in names)
        text = await call_refused(client, "gone__read")
        assert "gone" in text
    connection = monitor.downstream.by_id["gone"]
    assert not connection.connected and connection.last_error


async def test_filesystem_reads_pass_and_writes_leave_the_file_unchanged(
    make_monitor: MonitorFactory, node_bin: Path, tmp_path: Path
) -> None:
    root = tmp_path / "files"
    root.mkdir()
    notes = root / "notes.txt"
    notes.write_text("the original text\n")
    monitor = make_monitor(flow_config(downstream=[filesystem_downstream(node_bin, root)]))
    async with serving(monitor, READER) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"files__read_text_file", "files__list_directory"} <= names
        assert not {"files__write_file", "files__move_file"} & names
        read = await client.call_tool("files__read_text_file", {"path": str(notes)})
        assert not read.is_error and "the original text" in error_text(read)
        listing = await client.call_tool("files__list_directory", {"path": str(root)})
        assert "notes.txt" in error_text(listing)
        text = await call_refused(client, "files__write_file", path=str(notes), content="overwritten")
        assert "would mutate a destination" in text and "publish_draft" in text
        await call_refused(client, "move_file", source=str(notes), destination=str(root / "moved.txt"))
    assert notes.read_text() == "the original text\n" and not (root / "moved.txt").exists()
    assert [r.decision for r in audit_rows(monitor, "files__write_file")] == ["deny"]
    assert [r.decision for r in audit_rows(monitor, "files__move_file")] == ["deny"]


async def test_a_large_result_is_capped_and_secrets_in_it_are_redacted(
    make_monitor: MonitorFactory, node_bin: Path, tmp_path: Path
) -> None:
    root = tmp_path / "files"
    root.mkdir()
    secret = "ghp_" + "A1b2C3d4E5f6G7h8I9j0" * 2
    (root / "big.txt").write_text(f"token={secret}\n" + "x" * 5_000)
    config = {**filesystem_downstream(node_bin, root), "max_result_bytes": 1_000}
    monitor = make_monitor(flow_config(downstream=[config]))
    async with serving(monitor, READER) as client:
        result = await client.call_tool("files__read_text_file", {"path": str(root / "big.txt")})
    text = error_text(result)
    assert secret not in text and "[truncated at max_result_bytes = 1000]" in text
    assert len(text.encode()) < 1_100


async def test_status_inventory_and_posture_show_the_downstream(
    make_monitor: MonitorFactory, node_bin: Path, tmp_path: Path
) -> None:
    memory = seeded_memory(tmp_path / "memory.jsonl")
    wide_open = {"id": "wide", "command": str(tmp_path / "absent"), "read_tools": ["*"], "timeout_seconds": 5}
    monitor = make_monitor(flow_config(downstream=[memory_downstream(node_bin, memory), wide_open]))
    governance = principal("operator:auditor", "read", "governance")
    async with serving(monitor, governance) as client:
        status = (await client.call_tool("get_status", {})).structured_content
        inventory = (await client.call_tool("get_authority_inventory", {})).structured_content
        posture = (await client.call_tool("run_posture_checks", {})).structured_content
    assert status is not None and inventory is not None and posture is not None
    by_id = {d["downstream_id"]: d for d in status["downstream"]}
    assert by_id["memory"]["connected"] is True and by_id["memory"]["error"] is None
    assert by_id["memory"]["allowed"] == ["open_nodes", "read_graph", "search_nodes"]
    assert {"create_entities", "delete_entities"} <= set(by_id["memory"]["blocked"])
    assert by_id["wide"]["connected"] is False and by_id["wide"]["error"]
    assert any("downstream 'wide' not connected" in p for p in status["problems"])
    entry = next(e for e in inventory["downstream_servers"] if e["downstream_id"] == "memory")
    assert entry["transport"] == "stdio" and "create_entities" in entry["blocked_tools"]
    rules = [f["rule_id"] for f in posture["findings"]]
    assert rules.count("mcp_server_without_tool_allowlist") == 1
    finding = next(f for f in posture["findings"] if f["rule_id"] == "mcp_server_without_tool_allowlist")
    assert finding["evidence_refs"] == ["downstream:wide"]


def test_config_refuses_a_downstream_without_one_transport_or_with_a_literal_secret_reference() -> None:
    from incident_monitor.config import MonitorConfig

    with pytest.raises(ValueError, match="set exactly one of command"):
        MonitorConfig.model_validate({"downstream": [{"id": "x", "read_tools": ["a"]}]})
    with pytest.raises(ValueError, match=r"headers\.Authorization"):
        MonitorConfig.model_validate(
            {"downstream": [{"id": "x", "url": "https://m.example/mcp", "headers": {"Authorization": "env:bad-name"}}]}
        )
    with pytest.raises(ValueError, match="id"):
        MonitorConfig.model_validate({"downstream": [{"id": "a__b", "command": "x"}]})


# --- a downstream over Streamable HTTP: one of the tests' MCPServers on 127.0.0.1 ---------------------


def lookup_server() -> MCPServer:
    server = MCPServer(name="tickets")

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def lookup(ticket: str) -> str:
        """Read one ticket."""
        return f"ticket {ticket}: open"

    @server.tool()
    def close_ticket(ticket: str) -> str:
        """Close a ticket."""
        raise AssertionError("the guard must never let this through")

    return server


@contextmanager
def serving_http(app: Any) -> Iterator[str]:
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            threading.Event().wait(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def tickets_downstream(url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "id": "tickets",
        "url": url,
        "read_tools": ["lookup"],
        "allow_insecure_http": True,
        "allow_private_networks": True,
        "timeout_seconds": 10,
        **overrides,
    }


async def test_a_downstream_over_streamable_http_goes_through_the_egress_guard(make_monitor: MonitorFactory) -> None:
    with serving_http(lookup_server().streamable_http_app()) as url:
        monitor = make_monitor(flow_config(downstream=[tickets_downstream(url)]))
        async with serving(monitor, READER) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert "tickets__lookup" in names and "tickets__close_ticket" not in names
            result = await client.call_tool("tickets__lookup", {"ticket": "T-1"})
            assert not result.is_error and "ticket T-1: open" in error_text(result)
            text = await call_refused(client, "tickets__close_ticket", ticket="T-1")
            assert "would mutate a destination" in text

        refused = make_monitor(
            flow_config(downstream=[tickets_downstream(url, allow_private_networks=False)]),
            data_dir=monitor.data_dir.parent / "other",
        )
        async with serving(refused, READER) as client:
            assert not any("__" in t.name for t in (await client.list_tools()).tools)
            text = await call_refused(client, "tickets__lookup", ticket="T-1")
    connection = refused.downstream.by_id["tickets"]
    assert not connection.connected and "egress" in (connection.last_error or "")
    assert "tickets" in text


def growing_server() -> MCPServer:
    """A downstream whose ``lookup`` adds a ``lookup_archive`` tool and says so (tools/list_changed)."""
    server = MCPServer(name="tickets")

    def lookup_archive(ticket: str) -> str:
        """Read an archived ticket."""
        return f"archived {ticket}"

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    async def lookup(ticket: str, ctx: Context) -> str:
        """Read one ticket."""
        server.add_tool(lookup_archive, annotations=ToolAnnotations(read_only_hint=True))
        await ctx.session.send_tool_list_changed()
        return f"ticket {ticket}: open"

    return server


async def test_a_list_changed_notification_refreshes_the_exposed_tools(make_monitor: MonitorFactory) -> None:
    with serving_http(growing_server().streamable_http_app()) as url:
        monitor = make_monitor(flow_config(downstream=[tickets_downstream(url, read_tools=["lookup*"])]))
        async with serving(monitor, READER) as client:
            before = {t.name for t in (await client.list_tools()).tools}
            assert "tickets__lookup" in before and "tickets__lookup_archive" not in before
            assert not (await client.call_tool("tickets__lookup", {"ticket": "T-1"})).is_error
            connection = monitor.downstream.by_id["tickets"]
            with anyio.fail_after(10):
                while "lookup_archive" not in connection.tools.allowed:
                    await anyio.sleep(0.05)
            after = {t.name for t in (await client.list_tools()).tools}
            assert "tickets__lookup_archive" in after
            result = await client.call_tool("tickets__lookup_archive", {"ticket": "T-0"})
            assert "archived T-0" in error_text(result)


async def test_a_blocked_action_joins_the_callers_run_and_the_not_read_only_tool_is_a_posture_finding(
    make_monitor: MonitorFactory, node_bin: Path, tmp_path: Path
) -> None:
    from incident_monitor.server.tools import tool_catalog
    from incident_monitor.service.governance import posture

    memory = seeded_memory(tmp_path / "memory.jsonl")
    config = memory_downstream(node_bin, memory, read_tools=["read_graph", "delete_entities"])
    monitor = make_monitor(flow_config(downstream=[config]))
    async with serving(monitor, READER) as client:
        report = {"title": "Sync run failed", "source": "agent", "event": "agent.sync.failed", "run_id": "run-42"}
        assert not (await client.call_tool("report_incident", report)).is_error
        await call_refused(client, "memory__delete_entities", entityNames=["checkout"])
    (incident,) = blocked_incidents(monitor)
    assert incident.last_run_id == "run-42"
    assert [r.run_id for r in audit_rows(monitor, "memory__delete_entities")] == ["run-42"]
    findings = posture.run_posture_checks(monitor, principal("operator:auditor", "governance"), tool_catalog()).findings
    (finding,) = [f for f in findings if f.rule_id == "downstream-tool-not-read-only"]
    assert "delete_entities" in finding.title


def test_a_result_is_redacted_once_when_its_structured_content_restates_its_text() -> None:
    secret = "ghp_" + "A1b2C3d4E5f6G7h8I9j0" * 2
    graph = {"entities": [{"name": "ci", "observations": [f"token {secret}"]}], "relations": []}
    restated = CallToolResult(
        content=[TextContent(type="text", text=json.dumps(graph, indent=2))], structured_content=graph
    )
    shaped = shape_result(restated, 100_000)
    # The text (what a client of a tool without an output schema reads) is redacted; the copy is not sent.
    assert secret not in error_text(shaped) and "[REDACTED]" in error_text(shaped)
    assert shaped.structured_content is None

    # Structured content that says something else is kept, redacted on its own.
    other = CallToolResult(content=[TextContent(type="text", text="1 entity")], structured_content=graph)
    shaped = shape_result(other, 100_000)
    assert shaped.structured_content is not None and secret not in json.dumps(shaped.structured_content)
    assert "[REDACTED]" in json.dumps(shaped.structured_content) and error_text(shaped) == "1 entity"
