"""Tool errors in one shape, ``code: message``, the message ending with the next call to make.

Service errors (``MonitorError``) carry their code and message. The SDK puts ``Error executing tool
<name>: `` before the text of any error raised inside a tool, and replaces a crash's text with just
that prefix; ``ToolErrorShape`` removes the prefix and gives a crash a code and a next step, so an
agent parses one shape whatever failed and on whichever transport.
"""

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import ValidationError

from incident_monitor.errors import MonitorError

# ``code: message``, the code in snake_case: what every error text starts with.
ERROR_SHAPE = re.compile(r"^[a-z][a-z0-9_]*: \S")
SDK_VALIDATION = re.compile(r"^\d+ validation errors? for ")


@contextmanager
def tool_errors() -> Iterator[None]:
    try:
        yield
    except MonitorError as exc:
        raise ToolError(f"{exc.code}: {exc.message}") from None


def invalid_arguments_text(tool: str, problems: list[str]) -> str:
    """The refusal of a call's arguments: one ``  - field: what is wrong`` line per problem."""
    return (
        f"invalid_input: {tool} arguments rejected; fix these fields and call {tool} again "
        "(see its input schema):\n" + "\n".join(problems)
    )


def describe_invalid_arguments(tool: str, error: ValidationError) -> str:
    """Field names and what is wrong, never the rejected values (they may hold secrets)."""
    lines = []
    for err in error.errors(include_url=False, include_input=False, include_context=False):
        field = ".".join(str(p) for p in err["loc"]) or "(arguments)"
        lines.append(f"  - {field}: {err['msg']}")
    return invalid_arguments_text(tool, lines)


def error_text(tool: str, text: str) -> str:
    """``text`` in the one shape: the SDK's prefix removed; anything else (a crash) given a code and a next step."""
    prefix = f"Error executing tool {tool}"
    rest = text.removeprefix(prefix).removeprefix(": ") if text.startswith(prefix) else text
    if ERROR_SHAPE.match(rest):
        return rest
    if SDK_VALIDATION.match(rest):
        # The SDK's own argument check (ScopeGate's runs first and names the fields); its text may echo values.
        return f"invalid_input: {tool} arguments rejected; check them against its input schema and call {tool} again"
    # A crash (the SDK keeps its text on the server) or a message without a code, which may echo
    # the caller's values: neither is passed on.
    return (
        f"internal_error: {tool} failed inside the server (the cause is in the server log, not shown here); "
        f"call get_status, then call {tool} once more"
    )


def _reshaped(tool: str, result: HandlerResult) -> HandlerResult:
    # The chain may hand back the model or its wire form (a dict), depending on the transport era.
    if isinstance(result, CallToolResult) and result.is_error:
        text = "\n".join(block.text for block in result.content if isinstance(block, TextContent))
        return result.model_copy(update={"content": [TextContent(type="text", text=error_text(tool, text))]})
    if isinstance(result, dict) and (result.get("isError") or result.get("is_error")):
        blocks = result.get("content") or []
        text = "\n".join(str(b.get("text", "")) for b in blocks if isinstance(b, Mapping))
        return {**result, "content": [{"type": "text", "text": error_text(tool, text)}]}
    return result


class ToolErrorShape:
    """Middleware: every ``tools/call`` error result leaves the server as ``code: message``."""

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if ctx.method != "tools/call":
            return result
        name = (ctx.params or {}).get("name")
        return _reshaped(name if isinstance(name, str) else "the tool", result)
