"""Sessions with the guarded downstream MCP servers (``[[downstream]]``), one background task each.

Each task connects (stdio, or Streamable HTTP through the egress guard), lists the tools, classifies them
against ``read_tools`` and the downstream's own ``readOnlyHint``, and keeps the session open: the list is
refreshed on ``notifications/tools/list_changed`` or after ``refresh_seconds``. A server that is missing,
refuses, or crashes leaves ``connected = False`` with ``last_error`` (a readiness problem) and is retried;
nothing here raises into the server or waits longer than ``timeout_seconds``.
"""

from __future__ import annotations

import fnmatch
import logging
import math
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from mcp.types import CallToolRequest, CallToolRequestParams, CallToolResult, Tool, ToolListChangedNotification

from incident_monitor.config import DownstreamSettings
from incident_monitor.egress.rules import egress_refusal_in, policy_for
from incident_monitor.policy.redaction import redact_text
from incident_monitor.policy.scopes import DOWNSTREAM_SEPARATOR
from incident_monitor.secret_ref import is_env_ref, resolve_secret

if TYPE_CHECKING:
    from mcp import Client

logger = logging.getLogger(__name__)

RETRY_SECONDS = 30.0  # between reconnects of a server that is down


class DownstreamUnavailable(Exception):
    """The downstream did not answer (not connected, timed out, or the session broke)."""


@dataclass
class ToolClasses:
    allowed: dict[str, Tool] = field(default_factory=dict)  # tool name → the downstream's tool
    blocked: list[str] = field(default_factory=list)
    # Allowlisted, but the downstream says readOnlyHint = false: refused (a posture finding).
    not_read_only: list[str] = field(default_factory=list)


def matches_allowlist(patterns: list[str], tool: str) -> bool:
    return any(fnmatch.fnmatchcase(tool, pattern) for pattern in patterns)


def classify(settings: DownstreamSettings, tools: list[Tool]) -> ToolClasses:
    """The allowlist decides first; a tool the downstream itself marks as not read-only is never exposed."""
    classes = ToolClasses()
    for tool in sorted(tools, key=lambda t: t.name):
        if not matches_allowlist(settings.read_tools, tool.name):
            classes.blocked.append(tool.name)
        elif tool.annotations is not None and tool.annotations.read_only_hint is False:
            classes.not_read_only.append(tool.name)
        else:
            classes.allowed[tool.name] = tool
    return classes


def describe_error(exc: BaseException) -> str:
    """One redacted line; the first error inside an exception group (the SDK's task groups wrap them)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "timed out"
    message = str(exc).splitlines()[0][:160] if str(exc).strip() else ""
    return redact_text(f"{type(exc).__name__}{': ' + message if message else ''}")


def _resolved(values: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in values.items():
        secret = resolve_secret(value) if is_env_ref(value) else None
        out[name] = secret.get_secret_value() if secret else ("" if is_env_ref(value) else value)
    return out


class DownstreamConnection:
    """One downstream: its session, its classified tools, and what went wrong last."""

    def __init__(self, settings: DownstreamSettings) -> None:
        self.settings = settings
        self.connected = False
        self.last_error: str | None = None
        self.tools = ToolClasses()
        self.listed = False  # tools were listed at least once (so blocked/allowed are known)
        self.first_attempt = anyio.Event()
        self._client: Client | None = None
        self._wake = anyio.Event()
        self._reconnect = False

    @property
    def id(self) -> str:
        return self.settings.id

    @property
    def transport(self) -> str:
        return "stdio" if self.settings.command is not None else "http"

    def exposed_name(self, tool: str) -> str:
        return f"{self.id}{DOWNSTREAM_SEPARATOR}{tool}"

    def readiness(self) -> str:
        """For error messages: connected, or why not."""
        if self.connected:
            return "connected"
        return f"not connected ({self.last_error or 'connecting'})"

    async def _open(self, stack: AsyncExitStack) -> Client:
        # Lazy: the client stack loads only where a downstream is configured (not on every CLI command).
        from mcp import Client, StdioServerParameters
        from mcp.client.streamable_http import streamable_http_client

        s = self.settings
        # mode="legacy" (the initialize handshake, which servers of both eras answer): a 2026-07-28 session has
        # no channel for notifications/tools/list_changed outside a request; there the TTL refreshes the list.

        async def on_message(message: Any) -> None:
            if isinstance(message, ToolListChangedNotification):
                self._wake.set()  # relist on the session task, not inside the SDK's receive loop

        if s.command is not None:
            parameters = StdioServerParameters(command=s.command, args=s.args, env=_resolved(s.env) or None)
            client = Client(
                parameters, read_timeout_seconds=s.timeout_seconds, message_handler=on_message, mode="legacy"
            )
        else:
            assert s.url is not None
            from incident_monitor.egress.transport import egress_client  # lazy: the HTTP stack loads on first use

            # Every connection of the session goes through the egress guard (checked after DNS).
            http = await stack.enter_async_context(
                egress_client(policy_for(s), headers=_resolved(s.headers), timeout=s.timeout_seconds)
            )
            client = Client(
                streamable_http_client(s.url, http_client=http),
                read_timeout_seconds=s.timeout_seconds,
                message_handler=on_message,
                mode="legacy",
            )
        return await stack.enter_async_context(client)

    async def _list(self, client: Client) -> None:
        with anyio.fail_after(self.settings.timeout_seconds):
            listed = await client.list_tools()
        self.tools = classify(self.settings, list(listed.tools))
        self.listed = True
        for name in self.tools.not_read_only:
            logger.warning(
                "downstream %s: tool %s is in read_tools but the server marks it not read-only; refused",
                self.id,
                name,
            )

    async def run(self) -> None:
        """Connect, keep the session, relist on change or TTL; reconnect after a failure. Until cancelled."""
        while True:
            try:
                # One scope over the session: its deadline bounds connecting, then is lifted (a fail_after
                # around entering the client alone would close over the client's own task group).
                with anyio.CancelScope(deadline=anyio.current_time() + self.settings.timeout_seconds) as scope:
                    async with AsyncExitStack() as stack:
                        client = await self._open(stack)
                        await self._list(client)
                        scope.deadline = math.inf
                        self._client, self.connected, self.last_error = client, True, None
                        self.first_attempt.set()
                        await self._hold(client)
                if scope.cancelled_caught:
                    self.last_error = f"no answer within timeout_seconds = {self.settings.timeout_seconds:g}"
                    logger.warning("downstream %s: %s", self.id, self.last_error)
            except Exception as exc:  # a broken downstream is a readiness problem, never a crash
                refusal = egress_refusal_in(exc)
                self.last_error = f"refused by egress rules: {refusal}" if refusal else describe_error(exc)
                logger.warning("downstream %s: %s", self.id, self.last_error)
            finally:
                self._client, self.connected = None, False
            self.first_attempt.set()
            with anyio.move_on_after(RETRY_SECONDS):
                await self._wake.wait()
            self._wake = anyio.Event()
            self._reconnect = False

    async def _hold(self, client: Client) -> None:
        """Keep the session; relist on list_changed or after the TTL; return when a reconnect is wanted."""
        while True:
            with anyio.move_on_after(self.settings.refresh_seconds):
                await self._wake.wait()
            self._wake = anyio.Event()
            if self._reconnect:
                self._reconnect = False
                return
            await self._list(client)

    async def call(self, tool: str, arguments: dict[str, Any]) -> CallToolResult:
        client = self._client
        if client is None or not self.connected:
            self._wake.set()  # try to reconnect now rather than at the next retry
            raise DownstreamUnavailable(f"downstream '{self.id}' is {self.readiness()}")
        # The session's own request, not Client.call_tool: that also validates the result against the tool's
        # output schema (jsonschema over the whole result: most of a read's CPU in our process), and the guard
        # relies on no downstream schema: it exposes none, and redacts whatever comes back.
        request = CallToolRequest(params=CallToolRequestParams(name=tool, arguments=arguments))
        try:
            with anyio.fail_after(self.settings.timeout_seconds):
                return await client.session.send_request(request, CallToolResult)
        except TimeoutError:
            raise DownstreamUnavailable(
                f"downstream '{self.id}' did not answer {tool} within timeout_seconds = "
                f"{self.settings.timeout_seconds:g} ({self.readiness()})"
            ) from None
        except Exception as exc:
            self.last_error = describe_error(exc)
            self._reconnect = True
            self._wake.set()
            raise DownstreamUnavailable(f"downstream '{self.id}' failed on {tool}: {self.last_error}") from None


class DownstreamConnections:
    """Every configured downstream; ``running()`` holds their sessions for as long as the server serves."""

    def __init__(self, settings: list[DownstreamSettings]) -> None:
        self.by_id = {s.id: DownstreamConnection(s) for s in settings}

    def __iter__(self) -> Any:
        return iter(self.by_id.values())

    def __bool__(self) -> bool:
        return bool(self.by_id)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[DownstreamConnections]:
        """Connect every downstream (waiting at most its timeout for the first attempt), then serve."""
        if not self.by_id:
            yield self
            return
        async with anyio.create_task_group() as group:
            for connection in self:
                group.start_soon(connection.run)
            for connection in self:
                with anyio.move_on_after(connection.settings.timeout_seconds + 1):
                    await connection.first_attempt.wait()
            try:
                yield self
            finally:
                group.cancel_scope.cancel()
