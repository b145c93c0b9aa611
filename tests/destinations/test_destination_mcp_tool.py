"""MCP tool destination against the real @modelcontextprotocol/server-memory over stdio."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from mcp.server import MCPServer
from pydantic import ValidationError

from incident_monitor.destinations.mcp_tool import McpToolAdapter, build_arguments
from incident_monitor.destinations.settings import McpToolConfig
from support.adapter_requests import make_request, permit_for
from support.memory_graph import ENTITIES

pytestmark = pytest.mark.anyio


def memory_config(node_bin: Path, memory_file: Path, **overrides: Any) -> McpToolConfig:
    settings: dict[str, Any] = {
        "id": "memory",
        "server": "memory",
        "command": str(node_bin / "mcp-server-memory"),
        # The script starts with `#!/usr/bin/env node`: the pinned Node goes first on PATH.
        "env": {"PATH": f"{node_bin}:/usr/bin:/bin", "MEMORY_FILE_PATH": str(memory_file)},
        "tool": "create_entities",
        "allowed_tools": ["create_entities"],
        "arguments": {"entities": ENTITIES},
        "timeout_seconds": 60,
    }
    settings.update(overrides)
    return McpToolConfig(**settings)


def read_memory(memory_file: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in memory_file.read_text().splitlines() if line.strip()]


async def test_publish_creates_the_entity_with_its_observations(node_bin: Path, tmp_path: Path) -> None:
    memory_file = tmp_path / "memory.jsonl"
    adapter = McpToolAdapter(memory_config(node_bin, memory_file), data_dir=tmp_path)
    request = make_request(destination_id="memory", severity="critical")

    outcome = await adapter.publish(request, permit_for(request))

    assert outcome.status == "published", outcome.error
    assert outcome.external_url == "mcp://memory/create_entities"
    assert outcome.external_id == request.idempotency_key
    assert outcome.response_excerpt is not None and request.idempotency_key in outcome.response_excerpt
    records = read_memory(memory_file)
    assert records == [
        {
            "type": "entity",
            "name": request.idempotency_key,
            "entityType": "incident",
            "observations": [
                request.title,
                "severity: critical",
                f"evidence digest: {request.evidence_digest}",
                f"fingerprint: {request.fingerprint}",
            ],
        }
    ]

    # Publishing again: the server keeps one entity per name, so the key makes the publish idempotent.
    again = await adapter.publish(request, permit_for(request))
    assert again.status == "published"
    assert len(read_memory(memory_file)) == 1


async def test_a_tool_the_server_does_not_offer_fails_clearly(node_bin: Path, tmp_path: Path) -> None:
    config = memory_config(node_bin, tmp_path / "m.jsonl", tool="publish_incident", allowed_tools=["publish_incident"])
    request = make_request(destination_id="memory")
    outcome = await McpToolAdapter(config, data_dir=tmp_path).publish(request, permit_for(request))
    assert outcome.status == "failed"
    assert outcome.error == (
        "mcp://memory/publish_incident: the server offers no tool 'publish_incident': check tool against the "
        "server's tools"
    )
    assert not (tmp_path / "m.jsonl").exists()


async def test_a_tool_error_is_a_failed_receipt_with_the_excerpt(node_bin: Path, tmp_path: Path) -> None:
    # add_observations on an entity that does not exist: the server answers a tool error.
    config = memory_config(
        node_bin,
        tmp_path / "m.jsonl",
        tool="add_observations",
        allowed_tools=["add_observations"],
        arguments={"observations": json.dumps([{"entityName": "nobody", "contents": ["$draft.title"]}])},
    )
    request = make_request(destination_id="memory")
    outcome = await McpToolAdapter(config, data_dir=tmp_path).publish(request, permit_for(request))
    assert outcome.status == "failed"
    assert outcome.error is not None and "the tool answered an error" in outcome.error
    assert outcome.response_excerpt and "nobody" in outcome.response_excerpt


async def test_an_unstartable_server_is_a_failed_publish(tmp_path: Path) -> None:
    config = McpToolConfig(
        id="memory",
        server="memory",
        command=str(tmp_path / "no-such-program"),
        tool="create_entities",
        allowed_tools=["create_entities"],
        timeout_seconds=20,
    )
    adapter = McpToolAdapter(config, data_dir=tmp_path)
    reason = "destination 'memory': command not found or not executable: install it or give its full path in `command`"
    assert adapter.readiness().reasons == [reason]
    request = make_request(destination_id="memory")
    outcome = await adapter.publish(request, permit_for(request))
    assert outcome.status == "failed" and outcome.attempts == 0
    assert outcome.error == f"destination not ready: {reason}"
    assert "no-such-program" not in outcome.error  # a config value, not for agents' eyes


async def test_a_server_that_exits_at_once_is_a_failed_publish(tmp_path: Path) -> None:
    config = McpToolConfig(
        id="memory",
        server="memory",
        command="/bin/false",
        tool="create_entities",
        allowed_tools=["create_entities"],
        timeout_seconds=20,
    )
    request = make_request(destination_id="memory")
    outcome = await McpToolAdapter(config, data_dir=tmp_path).publish(request, permit_for(request))
    assert outcome.status == "failed"
    assert outcome.error is not None
    assert outcome.error.startswith("mcp://memory/create_entities: could not call the MCP server (")


async def test_a_private_http_server_is_refused_before_any_connection(tmp_path: Path) -> None:
    config = McpToolConfig(
        id="remote",
        server="remote",
        url="http://127.0.0.1:9/mcp",
        allow_insecure_http=True,
        tool="t",
        allowed_tools=["t"],
    )
    request = make_request(destination_id="remote")
    outcome = await McpToolAdapter(config, data_dir=tmp_path).publish(request, permit_for(request))
    assert outcome.status == "failed" and outcome.attempts == 0
    assert outcome.error is not None and "loopback address" in outcome.error


def test_an_empty_allowlist_is_not_ready(node_bin: Path, tmp_path: Path) -> None:
    adapter = McpToolAdapter(memory_config(node_bin, tmp_path / "m.jsonl", allowed_tools=[]), data_dir=tmp_path)
    readiness = adapter.readiness()
    assert not readiness.ready
    assert readiness.reasons == [
        "allowed_tools is empty: nothing may be called; add 'create_entities' to allowed_tools"
    ]


def test_a_tool_outside_the_allowlist_is_refused_at_config_load(node_bin: Path, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="tool 'delete_entities' is not in allowed_tools"):
        memory_config(node_bin, tmp_path / "m.jsonl", tool="delete_entities")


def test_unknown_references_and_transports_are_refused(node_bin: Path, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"arguments.entities: unknown reference \$draft.secret"):
        memory_config(node_bin, tmp_path / "m", arguments={"entities": "$draft.secret"})
    with pytest.raises(ValidationError, match="exactly one of command"):
        memory_config(node_bin, tmp_path / "m", url="https://mcp.example.com/mcp")
    with pytest.raises(ValidationError, match="exactly one of command"):
        McpToolConfig(id="x", server="x", tool="t", allowed_tools=["t"])


def test_missing_secret_env_is_not_ready(node_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IM_TEST_MCP_TOKEN", raising=False)
    config = memory_config(node_bin, tmp_path / "m", env={"API_TOKEN": "env:IM_TEST_MCP_TOKEN"})
    reasons = McpToolAdapter(config, data_dir=tmp_path).readiness().reasons
    assert reasons == ["env.API_TOKEN: environment variable IM_TEST_MCP_TOKEN is not set or empty"]


def test_argument_mapping_fills_references_placeholders_and_json() -> None:
    request = make_request(severity="low", labels=["a", "b"])
    arguments = build_arguments(
        {
            "title": "$draft.title",
            "labels": "$draft.labels",
            "summary": "[{$incident.severity}] {$draft.title}",
            "literal": "as written",
            "nested": '{"key": "$idempotency_key", "evidence": "$evidence"}',
        },
        request,
    )
    assert arguments == {
        "title": request.title,
        "labels": ["a", "b"],
        "summary": f"[low] {request.title}",
        "literal": "as written",
        "nested": {"key": request.idempotency_key, "evidence": request.evidence},
    }


# --- Streamable HTTP ------------------------------------------------------------------------------

HTTP_TOKEN_VAR = "IM_TEST_REMOTE_MCP_AUTH"


class RemoteMcp:
    """A real MCP server over Streamable HTTP (uvicorn on 127.0.0.1:0) with a bearer check and two tools."""

    def __init__(self, token: str) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        server = MCPServer("remote-tracker")

        @server.tool(name="open_ticket")
        def open_ticket(key: str, title: str, severity: str) -> str:
            self.calls.append(("open_ticket", {"key": key, "title": title, "severity": severity}))
            return f"ticket T-1 opened for {key}"

        @server.tool(name="delete_everything")
        def delete_everything() -> str:
            self.calls.append(("delete_everything", {}))
            return "gone"

        inner = server.streamable_http_app()
        expected = f"Bearer {token}".encode()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != expected:
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b"unauthorized"})
                return
            await inner(scope, receive, send)

        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        while not self._server.started:
            threading.Event().wait(0.05)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/mcp"

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def remote_config(url: str, **overrides: Any) -> McpToolConfig:
    settings: dict[str, Any] = {
        "id": "remote",
        "server": "tracker",
        "url": url,
        "headers": {"Authorization": f"env:{HTTP_TOKEN_VAR}"},
        "allow_insecure_http": True,
        "allow_private_networks": True,
        "tool": "open_ticket",
        "allowed_tools": ["open_ticket"],
        "arguments": {"key": "$idempotency_key", "title": "$draft.title", "severity": "$incident.severity"},
    }
    settings.update(overrides)
    return McpToolConfig(**settings)


async def test_publish_over_streamable_http_calls_only_the_allowlisted_tool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "remote-token-0123456789abcdef"
    header_value = f"Bearer {token}"
    monkeypatch.setenv(HTTP_TOKEN_VAR, header_value)
    remote = RemoteMcp(token)
    try:
        adapter = McpToolAdapter(remote_config(remote.url), data_dir=tmp_path)
        assert adapter.readiness().ready
        request = make_request(destination_id="remote", severity="high")
        outcome = await adapter.publish(request, permit_for(request))

        assert outcome.status == "published", outcome.error
        assert outcome.external_url == "mcp://tracker/open_ticket"
        assert outcome.response_excerpt == f"ticket T-1 opened for {request.idempotency_key}"
        assert remote.calls == [
            ("open_ticket", {"key": request.idempotency_key, "title": request.title, "severity": "high"})
        ]

        monkeypatch.setenv(HTTP_TOKEN_VAR, "Bearer wrong")
        refused = await adapter.publish(request, permit_for(request))
        assert refused.status == "failed"
        assert refused.error is not None and refused.error.startswith("mcp://tracker/open_ticket: could not call")
        assert "wrong" not in refused.error and token not in refused.error
        assert len(remote.calls) == 1  # delete_everything was never called
    finally:
        remote.close()
