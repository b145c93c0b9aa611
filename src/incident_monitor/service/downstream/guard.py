"""What a called name means for the downstream guard, and the governed call or the audited refusal.

A name is one of: an exposed read tool (``<id>__<tool>`` on the allowlist and not marked otherwise by the
downstream) → the governed call; anything else under a downstream's namespace, a downstream tool's bare
name, or a near miss of one (case, separators) → refused as a write to a destination: an audited deny,
which self-monitoring turns into a "blocked action" incident (deduplicated per tool and caller).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from mcp.types import CallToolResult, TextContent
from sqlmodel import col, select

from incident_monitor.domain.enums import Decision
from incident_monitor.domain.models import AuditEvent
from incident_monitor.errors import MonitorError, PermissionDenied
from incident_monitor.policy.engine import check_action
from incident_monitor.policy.principal import Principal
from incident_monitor.policy.redaction import redact_json, redact_text
from incident_monitor.policy.scopes import DOWNSTREAM_SEPARATOR
from incident_monitor.service.downstream.connections import DownstreamConnection, DownstreamUnavailable
from incident_monitor.service.governed import deny_if_not_allowed, governed_call, record_decision
from incident_monitor.service.monitor import Monitor

T = TypeVar("T")
Run = Callable[..., Awaitable[Any]]

GOVERNED_ALTERNATIVE = (
    "report_incident -> triage_draft -> preview_route -> request_approval -> publish_draft "
    "(an operator approves; publish_draft is the only way to change a destination)"
)
BLOCKED_REASON = "would mutate a destination: not a read tool of the downstream guard"


class DownstreamCallFailed(MonitorError):
    code = "downstream_unavailable"


@dataclass(frozen=True)
class Resolution:
    """A called name, resolved: ``exposed`` for an allowed read tool, else a refusal naming ``canonical``."""

    connection: DownstreamConnection
    tool: str
    exposed: bool

    @property
    def canonical(self) -> str:
        return self.connection.exposed_name(self.tool)


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def resolve(monitor: Monitor, name: str) -> Resolution | None:
    """What ``name`` is to the guard, or None when it is none of its business (our own or unknown tools)."""
    squashed = _squash(name)
    for connection in monitor.downstream:
        prefix = connection.id + DOWNSTREAM_SEPARATOR
        if name.startswith(prefix):
            tool = name.removeprefix(prefix)
            return Resolution(connection, tool, exposed=tool in connection.tools.allowed)
        known = [*connection.tools.allowed, *connection.tools.blocked, *connection.tools.not_read_only]
        for tool in known:
            # The bare name, or a near miss of either form ("memory_create_entities", "Memory.Create-Entities").
            if squashed in (_squash(tool), _squash(connection.id + tool)):
                return Resolution(connection, tool, exposed=False)
        if not connection.listed and squashed.startswith(_squash(connection.id)) and squashed != _squash(connection.id):
            # A downstream whose tools are not known yet: anything in its namespace fails closed.
            return Resolution(connection, name, exposed=False)
    return None


def latest_run(monitor: Monitor, principal: Principal) -> str | None:
    """The caller's most recent run in the audit log: where a refused downstream call belongs."""
    with monitor.session() as session:
        statement = (
            select(AuditEvent.run_id)
            .where(AuditEvent.principal == principal.name, col(AuditEvent.run_id).is_not(None))
            .order_by(col(AuditEvent.seq).desc())
            .limit(1)
        )
        return session.exec(statement).first()


def refuse(monitor: Monitor, principal: Principal, called: str, resolution: Resolution, arguments: Any) -> str:
    """Record the deny (self-monitoring raises the incident) and return the tool error text."""
    connection, tool = resolution.connection, resolution.tool
    if not connection.listed:
        why = f"the downstream is {connection.readiness()}, so its tools are unknown and every call fails closed"
    elif tool in connection.tools.not_read_only:
        why = "the downstream marks it not read-only"
    else:
        why = "it is not in the downstream's read_tools"
    reasons = [f"{BLOCKED_REASON}: {resolution.canonical} ({why}); called as {called[:100]!r}"]
    record_decision(
        monitor,
        principal,
        resolution.canonical,
        Decision.deny,
        reasons,
        arguments,
        run_id=latest_run(monitor, principal),
    )
    return (
        f"permission_denied: {called[:100]!r} is downstream '{connection.id}' tool {tool!r}, which {BLOCKED_REASON} "
        f"({why}). The refusal is audited and recorded as a blocked-action incident. To change a destination, make "
        f"the governed calls instead: {GOVERNED_ALTERNATIVE}."
    )


def _only_restates(texts: list[str], structured: Any) -> bool:
    """Whether the one text block is the structured content serialised (what SDK servers send beside it)."""
    if structured is None or len(texts) != 1 or not texts[0].lstrip().startswith(("{", "[")):
        return False
    try:
        return bool(json.loads(texts[0]) == structured)
    except ValueError:
        return False


def shape_result(result: CallToolResult, max_bytes: int) -> CallToolResult:
    """The downstream's result, redacted and capped at ``max_bytes`` of text (structured content dropped
    when it would not fit).

    Structured content that only restates the text block is dropped rather than redacted a second time
    (the redaction of a result was most of the guard's own CPU): the exposed tool declares no output
    schema, so its text is what a client reads, and it holds the same JSON.
    """
    texts = [b.text if isinstance(b, TextContent) else f"[{b.type} content omitted]" for b in result.content]
    text = redact_text("\n".join(texts))
    structured = result.structured_content
    if _only_restates(texts, structured):
        structured = None
    elif structured is not None:
        structured = redact_json(structured)
    encoded = text.encode()
    note = ""
    if len(encoded) > max_bytes:
        text = encoded[:max_bytes].decode(errors="ignore")
        note = f"\n[truncated at max_result_bytes = {max_bytes}]"
        structured = None
    if structured is not None and len(json.dumps(structured, default=str).encode()) > max_bytes:
        structured = None
    return CallToolResult(
        content=[TextContent(type="text", text=text + note)],
        structured_content=structured,
        is_error=result.is_error,
    )


async def call_read_tool(
    monitor: Monitor, principal: Principal, resolution: Resolution, arguments: dict[str, Any], *, run: Run
) -> CallToolResult:
    """An allowed read: scope check (a deny is audited), the call, then one audit row for the result."""
    name = resolution.canonical
    if not check_action(principal, name).allowed:  # a pure check first: only a refusal needs the store
        await run(deny_if_not_allowed, monitor, principal, name, arguments)
    connection = resolution.connection
    try:
        result = await connection.call(resolution.tool, arguments)
    except DownstreamUnavailable as exc:
        message = str(exc)
        await run(record_decision, monitor, principal, name, Decision.rejected, [message], arguments)
        return _error(f"{DownstreamCallFailed.code}: {message}; get_status shows the downstream's readiness")

    def allowed() -> None:
        with governed_call(monitor, principal, name, arguments) as call:
            call.notes.append(f"downstream {connection.id}: {'error result' if result.is_error else 'ok'}")

    async def audited() -> None:
        await run(allowed)

    # The audit row commits (a worker thread, mostly waiting on fsync) while the result is redacted here;
    # the answer leaves only after both.
    shaped: CallToolResult | None = None
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(audited)
            shaped = shape_result(result, connection.settings.max_result_bytes)
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None  # one task's error, as if the two had run in turn
    assert shaped is not None
    return shaped


def _error(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def scope_refusal(exc: PermissionDenied) -> CallToolResult:
    return _error(f"{exc.code}: {exc.message}")
