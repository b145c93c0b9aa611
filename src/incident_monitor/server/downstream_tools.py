"""The guarded downstream tools on our MCP surface: listed to ``downstream_read`` holders, called through
the service's guard (service/downstream/guard.py). Used by the scope gate, which owns tools/list and
tools/call; the tools are not registered with the SDK because their set changes while we serve.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
from mcp.types import CallToolResult, TextContent, Tool, ToolAnnotations

from incident_monitor.domain.enums import Decision
from incident_monitor.errors import PermissionDenied
from incident_monitor.policy.engine import can_call
from incident_monitor.policy.principal import Principal
from incident_monitor.server.tool_schemas import compact_schema
from incident_monitor.service.downstream import guard
from incident_monitor.service.governed import record_decision
from incident_monitor.service.monitor import Monitor

# Whatever the downstream says, what we expose is a read (the downstream's own hint was checked at listing).
FORCED_READ_ONLY = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True
)


def _flat(schema: dict[str, Any]) -> dict[str, Any]:
    """``$ref`` inlined where we can (some clients cannot follow it); a schema we cannot flatten stays as is."""
    try:
        return compact_schema(schema)
    except ValueError:
        return schema


def exposed_tools(monitor: Monitor, principal: Principal) -> list[Tool]:
    """The allowed read tools of every connected downstream, when the caller may call them."""
    tools: list[Tool] = []
    for connection in monitor.downstream:
        for name, tool in sorted(connection.tools.allowed.items()):
            exposed = connection.exposed_name(name)
            if connection.connected and can_call(principal, exposed):
                tools.append(
                    Tool(
                        name=exposed,
                        description=tool.description,
                        input_schema=_flat(tool.input_schema),
                        annotations=FORCED_READ_ONLY,
                    )
                )
    return tools


def _error(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


async def _in_worker(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))


async def call(
    monitor: Monitor, principal: Principal, name: str, resolution: guard.Resolution, arguments: dict[str, Any]
) -> CallToolResult:
    if resolution.exposed:
        try:
            return await guard.call_read_tool(monitor, principal, resolution, arguments, run=_in_worker)
        except PermissionDenied as exc:
            return _error(f"{exc.code}: {exc.message}")
    if resolution.tool in resolution.connection.tools.allowed:
        # A read tool under the wrong name: point at the right one (an unknown tool, audited as such).
        await _in_worker(
            record_decision, monitor, principal, f"tool:{name[:100]}", Decision.deny, ["unknown tool"], arguments
        )
        return _error(f"permission_denied: unknown tool {name[:100]!r}; did you mean {resolution.canonical!r}?")
    return _error(await _in_worker(guard.refuse, monitor, principal, name, resolution, arguments))
