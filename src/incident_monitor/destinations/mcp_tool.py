"""MCP tool destination: publish by calling one allowlisted tool on an outbound MCP server.

The outbound server is reached over stdio (``command`` + ``args``) or Streamable HTTP (``url``). Only
``tool`` is ever called, and only when it is in ``allowed_tools`` (an empty allowlist means the
destination is not ready). The server's tools are never listed to, or callable by, our own callers:
the publisher is the only code that talks to it.

``arguments`` maps the tool's arguments to draft/incident fields. A value is
- exactly a reference such as ``$draft.title`` → that field's value (string, list or object);
- a string containing ``{$ref}`` placeholders → the text with each replaced;
- a JSON array or object (for tools taking structured input) whose strings follow the two rules above;
- anything else → sent as written.

Idempotency depends on the outbound tool: map ``$idempotency_key`` (or another stable field) into an
argument it deduplicates on. The call is made once per publish; a failed publish can be published
again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from contextlib import AsyncExitStack
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from incident_monitor.destinations.base import DestinationAdapter, PublishOutcome, PublishRequest
from incident_monitor.destinations.delivery import enabled_reasons, url_reasons
from incident_monitor.destinations.settings import (
    PLACEHOLDER,
    REFERENCE,
    McpToolConfig,
    argument_template,
)
from incident_monitor.domain.readiness import Readiness
from incident_monitor.egress.rules import EgressPolicy, egress_refusal_in, policy_for
from incident_monitor.policy.redaction import redact_text
from incident_monitor.secret_ref import resolve_secret, resolved_secrets, secret_ref_variable

log = logging.getLogger(__name__)

RESULT_EXCERPT_CHARS = 500
_ENV_REF = re.compile(r"^env:[A-Za-z_][A-Za-z0-9_]*$")


def _fields(request: PublishRequest) -> dict[str, Any]:
    return {
        "$draft.id": request.draft_id,
        "$draft.title": request.title,
        "$draft.body": request.body,
        "$draft.severity": request.severity,
        "$draft.labels": list(request.labels),
        "$incident.id": request.incident_id,
        "$incident.severity": request.severity,
        "$incident.fingerprint": request.fingerprint,
        "$evidence": request.evidence,
        "$evidence.digest": request.evidence_digest,
        "$idempotency_key": request.idempotency_key,
        "$receipt_id": request.receipt_id,
        "$destination_id": request.destination_id,
        "$route_id": request.route_id,
    }


def _fill(node: Any, fields: dict[str, Any]) -> Any:
    if isinstance(node, str):
        if REFERENCE.match(node):
            return fields[node]
        return PLACEHOLDER.sub(lambda m: "" if fields[m.group(1)] is None else str(fields[m.group(1)]), node)
    if isinstance(node, list):
        return [_fill(item, fields) for item in node]
    if isinstance(node, dict):
        return {key: _fill(item, fields) for key, item in node.items()}
    return node


def build_arguments(mapping: dict[str, str], request: PublishRequest) -> dict[str, Any]:
    fields = _fields(request)
    return {name: _fill(argument_template(value), fields) for name, value in mapping.items()}


class McpToolAdapter(DestinationAdapter[McpToolConfig]):
    kind = "mcp_tool"

    def __repr__(self) -> str:
        return f"McpToolAdapter(id={self.config.id!r}, server={self.config.server!r}, tool={self.config.tool!r})"

    @property
    def target(self) -> str:
        return f"mcp://{self.config.server}/{self.config.tool}"

    @property
    def egress_policy(self) -> EgressPolicy:
        return policy_for(self.config)

    def is_tool_allowed(self, name: str) -> bool:
        """The allowlist rule (no network), the config's own: only tools on a non-empty allowlist."""
        return self.config.allows_tool(name)

    def secret_values(self) -> list[str]:
        refs = [v for v in (*self.config.env.values(), *self.config.headers.values()) if _ENV_REF.match(v)]
        return resolved_secrets(*refs)

    def readiness(self) -> Readiness:
        config = self.config
        reasons = enabled_reasons(config)
        if not config.allowed_tools:
            reasons.append(f"allowed_tools is empty: nothing may be called; add '{config.tool}' to allowed_tools")
        values = config.env if config.command is not None else config.headers
        for name, value in values.items():
            if _ENV_REF.match(value) and resolve_secret(value) is None:
                where = "env" if config.command is not None else "headers"
                reasons.append(f"{where}.{name}: environment variable {secret_ref_variable(value)} is not set or empty")
        if config.command is not None:
            # Looked up the way the process will be started: on the configured PATH, else ours.
            search_path = config.env.get("PATH") if not _ENV_REF.match(config.env.get("PATH", "")) else None
            if shutil.which(config.command, path=search_path or os.environ.get("PATH")) is None:
                reasons.append(
                    # The key, not its value: readiness reasons reach agents (get_status) and reports.
                    f"destination '{config.id}': command not found or not executable: install it or give its "
                    "full path in `command`"
                )
        if config.url is not None:
            reasons.extend(url_reasons("url", config.url, self.egress_policy))
        return Readiness(ready=not reasons, reasons=reasons)

    def _resolved(self, values: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in values.items():
            if _ENV_REF.match(value):
                secret = resolve_secret(value)
                out[name] = secret.get_secret_value() if secret else ""
            else:
                out[name] = value
        return out

    async def _deliver(self, request: PublishRequest) -> PublishOutcome:
        config = self.config
        if not self.is_tool_allowed(config.tool):  # defence in depth: config validation already refuses it
            return self._failed(f"tool '{config.tool}' is not in allowed_tools; nothing was called", attempts=0)
        arguments = build_arguments(config.arguments, request)
        try:
            with anyio.fail_after(config.timeout_seconds):
                async with AsyncExitStack() as stack:
                    client = await stack.enter_async_context(await self._client(stack))
                    tools = await client.list_tools()
                    if config.tool not in {t.name for t in tools.tools}:
                        return self._failed(
                            f"the server offers no tool '{config.tool}': check tool against the server's tools",
                        )
                    result = await client.call_tool(config.tool, arguments)
        except TimeoutError:
            return self._failed(
                f"the MCP server did not answer within timeout_seconds = {config.timeout_seconds:g}; publish again "
                "once it is healthy"
            )
        except Exception as exc:  # an unreachable or broken server is a failed publish, never a crash
            refusal = egress_refusal_in(exc)
            if refusal is not None:  # raised inside the SDK's transport tasks, so it arrives wrapped
                return self._failed(f"refused by egress rules: {refusal}", attempts=0)
            return self._failed(f"could not call the MCP server ({_describe(exc)}): check command/url and its logs")
        excerpt = _result_excerpt(result)
        if result.is_error:
            return self._failed(f"the tool answered an error: {excerpt[:200]}", excerpt=excerpt)
        return PublishOutcome(
            status="published",
            external_id=request.idempotency_key,
            external_url=self.target,
            response_excerpt=excerpt,
        )

    async def _client(self, stack: AsyncExitStack) -> Client:
        config = self.config
        if config.command is not None:
            parameters = StdioServerParameters(command=config.command, args=config.args, env=self._resolved(config.env))
            return Client(parameters, read_timeout_seconds=config.timeout_seconds)
        assert config.url is not None
        from incident_monitor.egress.transport import egress_client  # lazy: the HTTP stack loads on first send

        # Every connection the SDK opens for this session (POSTs, the GET stream, the DELETE) goes through the
        # egress guard: the address is checked when connecting, after DNS, so a rebinding name cannot slip by.
        http = await stack.enter_async_context(
            egress_client(self.egress_policy, headers=self._resolved(config.headers), timeout=config.timeout_seconds)
        )
        return Client(streamable_http_client(config.url, http_client=http), read_timeout_seconds=config.timeout_seconds)

    def _failed(self, error: str, *, attempts: int = 1, excerpt: str | None = None) -> PublishOutcome:
        message = f"{self.target}: {error}"
        log.warning("mcp_tool %s: %s", self.config.id, message)
        return PublishOutcome(
            status="failed", attempts=attempts, error=message, external_url=self.target, response_excerpt=excerpt
        )


def _result_excerpt(result: Any) -> str:
    parts: list[str] = []
    for block in result.content or []:
        text = getattr(block, "text", None)
        parts.append(text if isinstance(text, str) else f"[{getattr(block, 'type', 'content')}]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, default=str))
    return redact_text(" ".join(parts))[:RESULT_EXCERPT_CHARS]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _describe(exc.exceptions[0])
    message = str(exc).splitlines()[0][:160] if str(exc).strip() else ""
    return redact_text(f"{type(exc).__name__}{': ' + message if message else ''}")
