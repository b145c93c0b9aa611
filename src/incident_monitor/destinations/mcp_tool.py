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
from typing import Any, Literal
from urllib.parse import urlsplit

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from pydantic import Field, field_validator, model_validator

from incident_monitor.destinations.base import (
    DestinationAdapter,
    DestinationConfig,
    PublishOutcome,
    PublishRequest,
    Readiness,
)
from incident_monitor.destinations.egress import (
    EgressPolicy,
    EgressRefused,
    policy_for,
    resolve_checked,
    scheme_problem,
)
from incident_monitor.policy.redaction import redact_text
from incident_monitor.secret_ref import resolve_secret, resolved_secrets, secret_ref_variable

log = logging.getLogger(__name__)

RESULT_EXCERPT_CHARS = 500
_REFERENCE = re.compile(r"^\$[a-z_]+(?:\.[a-z_]+)?$")
_PLACEHOLDER = re.compile(r"\{(\$[a-z_]+(?:\.[a-z_]+)?)\}")
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


REFERENCES: frozenset[str] = frozenset(
    _fields(
        PublishRequest(
            receipt_id="",
            idempotency_key="",
            draft_id="",
            incident_id="",
            destination_id="",
            route_id=None,
            title="",
            body="",
            severity="",
            labels=[],
            fingerprint="",
            evidence={},
            evidence_digest="",
        )
    )
)


def _template(value: str) -> Any:
    """The parsed form of one argument value (JSON arrays/objects are parsed, the rest kept)."""
    stripped = value.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except ValueError:
            return value
    return value


def _references_in(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node] if _REFERENCE.match(node) else _PLACEHOLDER.findall(node)
    if isinstance(node, list):
        return [r for item in node for r in _references_in(item)]
    if isinstance(node, dict):
        return [r for item in node.values() for r in _references_in(item)]
    return []


def _fill(node: Any, fields: dict[str, Any]) -> Any:
    if isinstance(node, str):
        if _REFERENCE.match(node):
            return fields[node]
        return _PLACEHOLDER.sub(lambda m: "" if fields[m.group(1)] is None else str(fields[m.group(1)]), node)
    if isinstance(node, list):
        return [_fill(item, fields) for item in node]
    if isinstance(node, dict):
        return {key: _fill(item, fields) for key, item in node.items()}
    return node


def build_arguments(mapping: dict[str, str], request: PublishRequest) -> dict[str, Any]:
    fields = _fields(request)
    return {name: _fill(_template(value), fields) for name, value in mapping.items()}


class McpToolConfig(DestinationConfig):
    kind: Literal["mcp_tool"] = "mcp_tool"
    server: str = Field(min_length=1, max_length=100, description="A display name for the outbound MCP server.")
    command: str | None = Field(default=None, description="stdio: the server's program.")
    args: list[str] = Field(default_factory=list, description="stdio: its arguments.")
    env: dict[str, str] = Field(
        default_factory=dict, description="stdio: its environment; secret values as env:NAME references."
    )
    url: str | None = Field(default=None, description="Streamable HTTP: the server's endpoint.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="HTTP: request headers; secret values as env:NAME references."
    )
    tool: str = Field(min_length=1, description="The one tool called to publish.")
    allowed_tools: list[str] = Field(
        default_factory=list, description="The allowlist; `tool` must be in it. Empty: nothing may be called."
    )
    arguments: dict[str, str] = Field(
        default_factory=dict, description="Tool argument → value or $reference ($draft.title, $idempotency_key, …)."
    )
    timeout_seconds: float = Field(30.0, gt=0, le=300)
    allow_insecure_http: bool = False
    allow_private_networks: bool = False

    @field_validator("arguments")
    @classmethod
    def _known_references(cls, value: dict[str, str]) -> dict[str, str]:
        for name, template in value.items():
            unknown = [r for r in _references_in(_template(template)) if r not in REFERENCES]
            if unknown:
                raise ValueError(
                    f"arguments.{name}: unknown reference {unknown[0]}; use one of: {', '.join(sorted(REFERENCES))}"
                )
        return value

    @model_validator(mode="after")
    def _one_transport_and_allowed_tool(self) -> McpToolConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("set exactly one of command (stdio server) or url (Streamable HTTP server)")
        if self.allowed_tools and self.tool not in self.allowed_tools:
            raise ValueError(
                f"tool '{self.tool}' is not in allowed_tools ({', '.join(self.allowed_tools)}): add it there or "
                "call an allowed tool"
            )
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("url must be an http(s) URL with a host, e.g. url = 'https://mcp.example.com/mcp'")
            if parts.username or parts.password:
                raise ValueError("url must not contain credentials; put them in headers as env:NAME references")
        return self


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
        """The allowlist rule (no network): only tools on a non-empty allowlist may be called."""
        return bool(self.config.allowed_tools) and name in self.config.allowed_tools

    def secret_values(self) -> list[str]:
        refs = [v for v in (*self.config.env.values(), *self.config.headers.values()) if _ENV_REF.match(v)]
        return resolved_secrets(*refs)

    def readiness(self) -> Readiness:
        config = self.config
        reasons: list[str] = []
        if not config.enabled:
            reasons.append(f"destination '{config.id}' is disabled (set enabled = true to publish)")
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
            problem = scheme_problem(config.url, self.egress_policy)
            if problem:
                reasons.append(problem)
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
        except EgressRefused as exc:
            return self._failed(f"refused by egress rules: {exc}", attempts=0)
        except TimeoutError:
            return self._failed(
                f"the MCP server did not answer within timeout_seconds = {config.timeout_seconds:g}; publish again "
                "once it is healthy"
            )
        except Exception as exc:  # an unreachable or broken server is a failed publish, never a crash
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
        problem = scheme_problem(config.url, self.egress_policy)
        if problem:
            raise EgressRefused(problem)
        parts = urlsplit(config.url)
        await resolve_checked(parts.hostname or "", parts.port or 443, self.egress_policy)
        http = await stack.enter_async_context(
            httpx2.AsyncClient(headers=self._resolved(config.headers), timeout=config.timeout_seconds, trust_env=False)
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
