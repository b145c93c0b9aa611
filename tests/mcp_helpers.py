"""Calling tools the way the tests need: expect success or refusal, with readable failures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from mcp import Client
from mcp.types import CallToolResult

from incident_monitor.policy.principal import Principal
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
