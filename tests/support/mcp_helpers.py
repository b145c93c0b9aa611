"""Calling tools the way the tests need: expect success or refusal, with readable failures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from mcp import Client
from mcp.types import CallToolResult

from incident_monitor.policy.principal import LOCAL_AGENT, Principal, local_operator
from incident_monitor.server.errors import ERROR_SHAPE
from incident_monitor.server.tools import build_mcp_server
from incident_monitor.service.monitor import Monitor


def error_text(result: CallToolResult) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


async def call_ok(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, f"{tool} refused: {error_text(result)}"
    assert result.structured_content is not None, f"{tool} returned no structured content"
    return result.structured_content


async def call_refused(client: Client, tool: str, **arguments: Any) -> str:
    """The refusal's text, which must be in the one error shape: ``code: message``."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool} should have been refused, got {result.structured_content}"
    text = error_text(result)
    assert ERROR_SHAPE.match(text), f"{tool}'s error is not in the shape 'code: message': {text!r}"
    return text


@asynccontextmanager
async def mcp_client(monitor: Monitor, who: Principal | Callable[[], Principal]) -> AsyncIterator[Client]:
    """An in-memory client of a server built on ``monitor``, calling as ``who``."""
    resolver = who if callable(who) else (lambda: who)
    async with Client(build_mcp_server(monitor, resolver)) as client:
        yield client


@asynccontextmanager
async def agent_and_operator(monitor: Monitor) -> AsyncIterator[tuple[Client, Client]]:
    """Two clients of one monitor: the local agent's and the local operator's (different principals)."""
    async with AsyncExitStack() as stack:
        agent = await stack.enter_async_context(mcp_client(monitor, LOCAL_AGENT))
        operator = await stack.enter_async_context(mcp_client(monitor, local_operator()))
        yield agent, operator


# A runtime failure: routed to the signed webhook, which needs an operator's approval (tests' flow_config).
RUNTIME_FAILURE: dict[str, Any] = {
    "title": "Agent run failed during Linear sync",
    "detail": "The workflow could not resolve the Linear MCP capability.",
    "source": "automation_v2",
    "event": "automation_v2.run.failed",
    "level": "error",
    "route_tags": ["runtime-failure"],
}
# A low-severity report no route claims: the default destination (telemetry), no approval.
LINT_WARNING: dict[str, Any] = {
    "title": "Lint step reported deprecated config keys",
    "detail": "ruff warned about deprecated settings in pyproject.toml.",
    "source": "ci",
    "event": "ci.lint.failed",
    "level": "warning",
}
