"""MCP middleware: the policy layer's front door for tools.

- ``tools/list`` shows a caller only the tools its scopes allow.
- ``tools/call`` of an unknown tool, or of a tool whose scope the caller lacks, is denied (and
  audited) before the arguments are even parsed; invalid arguments (server/tool_arguments.py, then
  the tool's pydantic model) are refused with the field names and never the values, audited as
  rejected: never an internal error, and never a self-monitoring incident. Allowed calls go on to
  the tool, whose service audits the decision.
"""

from collections.abc import Mapping
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver.utilities.func_metadata import FuncMetadata
from mcp.types import CallToolResult, ListResourcesResult, ListToolsResult, TextContent
from pydantic import ValidationError

from incident_monitor.domain.enums import Decision
from incident_monitor.errors import PermissionDenied
from incident_monitor.policy.engine import can_call
from incident_monitor.policy.principal import Principal
from incident_monitor.server import downstream_tools
from incident_monitor.server.errors import describe_invalid_arguments, invalid_arguments_text
from incident_monitor.server.principals import RequestPrincipal
from incident_monitor.server.tool_arguments import argument_problems, auditable
from incident_monitor.service.downstream.guard import resolve as resolve_downstream
from incident_monitor.service.governed import deny_if_not_allowed, record_decision, shown_tool_name
from incident_monitor.service.monitor import Monitor

GOVERNED_RESOURCE_PREFIX = "incident-monitor://inventory"


def _error(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


class ScopeGate:
    def __init__(
        self, monitor: Monitor, resolve_principal: RequestPrincipal, tools: Mapping[str, FuncMetadata]
    ) -> None:
        self.monitor = monitor
        self.resolve_principal = resolve_principal
        self.tools = tools
        # The names each tool takes (its fields and their aliases), for argument_problems on every call.
        self._accepted = {
            name: frozenset(n for f, info in metadata.arg_model.model_fields.items() for n in (f, info.alias) if n)
            for name, metadata in tools.items()
        }
        # The registered tools never change while we serve, and what a caller sees of them depends on its
        # scopes alone (policy.engine.can_call): their wire form is built once and filtered once per scope
        # set, not per request (tools/list of 18 tools cost more than a no-op tool call; issue 18). The wire
        # form is the chain's answer, already shaped for the caller's protocol version (each era has its own
        # envelope), so it is kept per version.
        self._listings: dict[str, dict[str, Any]] = {}
        self._visible: dict[tuple[str, frozenset[str]], list[dict[str, Any]]] = {}

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "tools/list":
            version = ctx.protocol_version
            if version not in self._listings:
                result = await call_next(ctx)
                listing = self._wire_form(result)
                if listing is None:  # a shape we do not know: filtered as it comes, every time
                    return self._filter(result, self.resolve_principal())
                self._listings[version] = listing
            return self._listed(version, self._listings[version], self.resolve_principal())
        if ctx.method == "resources/list":
            return self._filter_resources(await call_next(ctx), self.resolve_principal())
        if ctx.method == "tools/call":
            # The caller resolved once for the whole call: the gate's checks and the tool read the same principal.
            with self.resolve_principal.resolved():
                return await self._call_tool(ctx, call_next)
        return await call_next(ctx)

    async def _call_tool(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """A tools/call: a downstream tool's handed to its guard, ours checked (``_check_call``), then served."""
        params = ctx.params or {}
        name, arguments = params.get("name"), params.get("arguments")
        # Guarded downstream tools (and names that try to reach one) never reach the SDK's tool table.
        resolution = resolve_downstream(self.monitor, name) if isinstance(name, str) else None
        if resolution is not None and name not in self.tools:
            # Their own servers decide which names they take; the gate only that the arguments can be read.
            listed = resolution.connection.tools.allowed.get(resolution.tool) if resolution.exposed else None
            names = listed.input_schema.get("properties", {}) if listed is not None else {}
            unreadable = argument_problems(str(name), arguments, names, other_names=True)
            if unreadable:
                action = resolution.canonical if resolution.exposed else f"tool:{shown_tool_name(name)}"
                return self._reject(action, str(name), unreadable, arguments)
            return await downstream_tools.call(
                self.monitor, self.resolve_principal(), str(name), resolution, dict(arguments or {})
            )
        refusal = self._check_call(params)
        if refusal is not None:
            return refusal
        return await call_next(ctx)

    @staticmethod
    def _wire_form(result: HandlerResult) -> dict[str, Any] | None:
        if isinstance(result, ListToolsResult):
            return result.model_dump(mode="json", by_alias=True, exclude_none=True)
        if isinstance(result, dict) and isinstance(result.get("tools"), list):
            return dict(result)
        return None

    def _listed(self, version: str, listing: dict[str, Any], principal: Principal) -> dict[str, Any]:
        """The caller's tools in wire form: its scope set's share of the registered tools, then the
        downstream tools it may call (their set changes while we serve, so never cached)."""
        visible = self._visible.get((version, principal.scopes))
        if visible is None:
            visible = [t for t in listing["tools"] if can_call(principal, str(t.get("name")))]
            self._visible[(version, principal.scopes)] = visible
        downstream = downstream_tools.exposed_tools(self.monitor, principal)
        tools = visible + [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in downstream]
        return {**listing, "tools": tools}

    def _filter(self, result: HandlerResult, principal: Principal) -> HandlerResult:
        # The chain may hand back the model or its wire form (a dict), depending on the transport era.
        downstream = downstream_tools.exposed_tools(self.monitor, principal)
        if isinstance(result, ListToolsResult):
            visible = [t for t in result.tools if can_call(principal, t.name)]
            return result.model_copy(update={"tools": visible + downstream})
        if isinstance(result, dict) and isinstance(result.get("tools"), list):
            return {
                **result,
                "tools": [t for t in result["tools"] if can_call(principal, str(t.get("name")))]
                + [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in downstream],
            }
        return result

    def _filter_resources(self, result: HandlerResult, principal: Principal) -> HandlerResult:
        """The inventory resources are listed only to callers that may read them (reading checks again)."""
        if can_call(principal, "get_authority_inventory"):
            return result

        def visible(uri: object) -> bool:
            return not str(uri).startswith(GOVERNED_RESOURCE_PREFIX)

        if isinstance(result, ListResourcesResult):
            return result.model_copy(update={"resources": [r for r in result.resources if visible(r.uri)]})
        if isinstance(result, dict) and isinstance(result.get("resources"), list):
            return {**result, "resources": [r for r in result["resources"] if visible(r.get("uri"))]}
        return result

    def _reject(self, action: str, tool: str, problems: list[str], arguments: Any) -> CallToolResult:
        record_decision(
            self.monitor, self.resolve_principal(), action, Decision.rejected, problems, auditable(arguments)
        )
        return _error(invalid_arguments_text(tool, problems))

    def _check_call(self, params: Mapping[str, Any]) -> CallToolResult | None:
        principal = self.resolve_principal()
        name = params.get("name")
        # What the audit digest is computed over: arguments holding a lone surrogate cannot be hashed as they are.
        arguments = auditable(params.get("arguments"))
        if not isinstance(name, str) or name not in self.tools:
            shown = shown_tool_name(name)  # a made-up name may carry a secret: never repeated as sent
            record_decision(
                self.monitor,
                principal,
                f"tool:{shown}",
                Decision.deny,
                ["unknown tool: denied (fail closed)"],
                arguments,
            )
            return _error(f"permission_denied: unknown tool {shown!r}; call tools/list to see your tools")
        try:
            deny_if_not_allowed(self.monitor, principal, name, arguments)
        except PermissionDenied as exc:
            return _error(f"{exc.code}: {exc.message}")
        metadata = self.tools[name]
        sent = params.get("arguments")
        # The SDK unpacks JSON sent inside a string for a non-string argument: checked as the tool would get it.
        problems = argument_problems(
            name, metadata.pre_parse_json(sent) if isinstance(sent, dict) else sent, self._accepted[name]
        )
        if problems:
            return self._reject(name, name, problems, sent)
        try:
            metadata.validate_arguments(dict(sent or {}))
        except ValidationError as exc:
            text = describe_invalid_arguments(name, exc)
            record_decision(self.monitor, principal, name, Decision.rejected, text.splitlines()[1:], arguments)
            return _error(text)
        return None
