"""Service errors → MCP tool errors whose text tells the agent what failed and what to do next."""

from collections.abc import Iterator
from contextlib import contextmanager

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import ValidationError

from incident_monitor.errors import MonitorError


@contextmanager
def tool_errors() -> Iterator[None]:
    try:
        yield
    except MonitorError as exc:
        raise ToolError(f"{exc.code}: {exc.message}") from None


def describe_invalid_arguments(tool: str, error: ValidationError) -> str:
    """Field names and what is wrong, never the rejected values (they may hold secrets)."""
    lines = []
    for err in error.errors(include_url=False, include_input=False, include_context=False):
        field = ".".join(str(p) for p in err["loc"]) or "(arguments)"
        lines.append(f"  - {field}: {err['msg']}")
    return f"invalid_input: {tool} arguments rejected; fix these fields (see the tool's input schema):\n" + "\n".join(
        lines
    )
