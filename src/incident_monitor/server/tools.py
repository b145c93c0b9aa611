"""The MCP tools: thin wrappers over the service functions (names and scopes are a contract).

No ``from __future__ import annotations`` here: the SDK reads these signatures at registration.
"""

import inspect
import json
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, Literal, TypeVar

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.server.mcpserver.tools import Tool
from mcp.types import ToolAnnotations
from pydantic import AfterValidator, Field

from incident_monitor import __version__
from incident_monitor.domain.code_change import CodeChangeView
from incident_monitor.domain.enums import DraftStatus, IncidentStatus, Severity
from incident_monitor.domain.io import (
    ApprovalResult,
    DraftDetail,
    DraftPage,
    IncidentDetail,
    IncidentPage,
    IncidentReport,
    PublishResult,
    ReceiptPage,
    ReportResult,
    TriageResult,
)
from incident_monitor.domain.models import IncidentBase
from incident_monitor.errors import MonitorError
from incident_monitor.policy.principal import Principal
from incident_monitor.policy.route_decision import RouteDecision
from incident_monitor.policy.scopes import ACTION_SCOPES, READ
from incident_monitor.server.errors import ToolErrorShape, tool_errors
from incident_monitor.server.logging_level import accept_logging_level
from incident_monitor.server.principals import RequestPrincipal
from incident_monitor.server.replicas import request_state_security
from incident_monitor.server.scope_gate import ScopeGate
from incident_monitor.server.tool_schemas import compact_schema, enum_values
from incident_monitor.service import (
    approvals,
    code_changes,
    incidents,
    intake,
    log_sources,
    publishing,
    queries,
    route_preview,
    status,
    triage,
)
from incident_monitor.service.governance import cards, inventory, posture, report
from incident_monitor.service.governance import probes as assessment_probes
from incident_monitor.service.monitor import Monitor

T = TypeVar("T")

MAX_ID_CHARS = 100


def _identifier(value: str) -> str:
    if not 1 <= len(value) <= MAX_ID_CHARS:
        raise ValueError(f"an id is 1 to {MAX_ID_CHARS} characters: copy it from a result")
    return value


# Identifiers carry no description (their names are the same in every input and output, DESIGN.md) and no length
# limits in the schema: an agent copies an id from a result, never composes one, so limits in tools/list would
# cost bytes in every session and tell it nothing. The limit is checked all the same.
Identifier = Annotated[str, AfterValidator(_identifier)]
DraftId = Identifier
IncidentId = Identifier
ApprovalId = Identifier
RunId = Identifier  # a code change's run_id (ours, ccr_…)
Limit = Annotated[int, Field(ge=1, le=1000)]
Offset = Annotated[int, Field(ge=0)]  # the previous page's next_offset
ShortText = Annotated[str, Field(max_length=200)]


def _annotations(*, read_only: bool, destructive: bool, idempotent: bool, open_world: bool) -> ToolAnnotations:
    return ToolAnnotations(
        read_only_hint=read_only,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=open_world,
    )


READ_ONLY = _annotations(read_only=True, destructive=False, idempotent=True, open_world=False)

TOOL_ANNOTATIONS: dict[str, ToolAnnotations] = {
    "get_status": READ_ONLY,
    "report_incident": _annotations(read_only=False, destructive=False, idempotent=True, open_world=False),
    "list_incidents": READ_ONLY,
    "get_incident": READ_ONLY,
    "list_drafts": READ_ONLY,
    "get_draft": READ_ONLY,
    "triage_draft": _annotations(read_only=False, destructive=False, idempotent=False, open_world=False),
    "preview_route": READ_ONLY,
    "request_approval": _annotations(read_only=False, destructive=False, idempotent=True, open_world=False),
    "decide_approval": _annotations(read_only=False, destructive=False, idempotent=False, open_world=False),
    "publish_draft": _annotations(read_only=False, destructive=False, idempotent=True, open_world=True),
    "list_receipts": READ_ONLY,
    "resolve_incident": _annotations(read_only=False, destructive=False, idempotent=False, open_world=False),
    # Governance evidence: read-only, or dry-run against an in-memory copy (probes, report).
    "get_authority_inventory": READ_ONLY,
    "run_posture_checks": READ_ONLY,
    "run_assessment_probes": READ_ONLY,
    "build_assessment_report": READ_ONLY,
    "build_deployment_cards": READ_ONLY,
    "list_sources": READ_ONLY,
    # Code changes (issue 15): a request only drafts; the launch is publish_draft of that draft.
    "request_code_change": _annotations(read_only=False, destructive=False, idempotent=False, open_world=False),
    "follow_up_code_change": _annotations(read_only=False, destructive=False, idempotent=False, open_world=False),
    "stop_code_change": _annotations(read_only=False, destructive=True, idempotent=True, open_world=True),
    "get_code_change": READ_ONLY,
    "list_code_changes": READ_ONLY,
}


def tool_catalog() -> list[inventory.ToolEntry]:
    """The MCP tools with their scopes and annotations, for the authority inventory."""
    return [
        inventory.ToolEntry(
            name=name,
            scopes=sorted(ACTION_SCOPES.get(name, frozenset())),
            read_only=bool(hints.read_only_hint),
            destructive=bool(hints.destructive_hint),
            idempotent=bool(hints.idempotent_hint),
            open_world=bool(hints.open_world_hint),
        )
        for name, hints in TOOL_ANNOTATIONS.items()
    ]


async def in_worker(service: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a (synchronous) service call in a worker thread: it blocks on SQLite and its fsync, and there the
    event loop keeps serving other calls and concurrent units of work share one commit (store/group_commit.py)."""
    return await anyio.to_thread.run_sync(partial(service, *args, **kwargs))


class IncidentMonitorTools:
    """One method per tool; each resolves the caller and calls one service function."""

    def __init__(self, monitor: Monitor, principal: Callable[[], Principal]) -> None:
        self.monitor = monitor
        self.principal = principal

    async def get_status(self) -> status.StatusView:
        """Readiness of the monitor and destinations. Call first; stop if what you need is not ready."""
        with tool_errors():
            return await in_worker(status.get_status, self.monitor, self.principal())

    async def report_incident(
        self,
        title: Annotated[str, Field(min_length=1, description="One line saying what failed.")],
        source: Annotated[str, Field(min_length=1, max_length=200, description="Who observed it, e.g. 'ci'.")],
        event: Annotated[str, Field(min_length=1, max_length=200, description="Event name, e.g. 'ci.smoke.failed'.")],
        detail: Annotated[str, Field(description="What happened and the evidence an operator needs.")] = "",
        level: Annotated[str, Field(max_length=40, description="critical | error | warning | info.")] = "error",
        fingerprint: Annotated[
            str | None,
            Field(max_length=200, description="Dedupe key; computed from stable fields if omitted."),
        ] = None,
        route_tags: Annotated[list[ShortText] | None, Field(description="Tags routes match on.")] = None,
        risk_category: Annotated[str | None, Field(max_length=200)] = None,
        risk_level: Severity | None = None,
        project_id: Annotated[str | None, Field(max_length=200)] = None,
        run_id: Annotated[
            str | None,
            Field(max_length=200, description="The reporting run (not fingerprinted)."),
        ] = None,
        session_id: Annotated[str | None, Field(max_length=200)] = None,
        evidence_refs: Annotated[list[str] | None, Field(description="Links or paths to logs, traces, runs.")] = None,
        context: Annotated[
            dict[str, Any] | None, Field(description="Structured evidence; secrets are redacted.")
        ] = None,
    ) -> ReportResult:
        """Report a failure or safety signal."""
        report = IncidentReport(
            title=title,
            detail=detail,
            source=source,
            event=event,
            level=level,
            fingerprint=fingerprint,
            route_tags=route_tags or [],
            risk_category=risk_category,
            risk_level=risk_level,
            project_id=project_id,
            run_id=run_id,
            session_id=session_id,
            evidence_refs=evidence_refs or [],
            context=context or {},
        )
        with tool_errors():
            return await in_worker(intake.report_incident, self.monitor, self.principal(), report)

    async def list_incidents(
        self,
        status: IncidentStatus | None = None,
        severity: Severity | None = None,
        source: Annotated[str | None, Field(max_length=200)] = None,
        project_id: Annotated[str | None, Field(max_length=200)] = None,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> IncidentPage:
        """Incident summaries, most recently seen first; details with get_incident."""
        with tool_errors():
            return await in_worker(
                queries.list_incidents,
                self.monitor,
                self.principal(),
                status=status,
                severity=severity,
                source=source,
                project_id=project_id,
                limit=limit,
                offset=offset,
            )

    async def get_incident(self, incident_id: IncidentId) -> IncidentDetail:
        """One incident in full, with its last run's timeline."""
        with tool_errors():
            return await in_worker(queries.get_incident, self.monitor, self.principal(), incident_id)

    async def list_drafts(
        self,
        status: DraftStatus | None = None,
        severity: Severity | None = None,
        source: Annotated[str | None, Field(max_length=200)] = None,
        incident_id: IncidentId | None = None,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> DraftPage:
        """Draft summaries, most recently updated first; details with get_draft."""
        with tool_errors():
            return await in_worker(
                queries.list_drafts,
                self.monitor,
                self.principal(),
                status=status,
                severity=severity,
                source=source,
                incident_id=incident_id,
                limit=limit,
                offset=offset,
            )

    async def get_draft(self, draft_id: DraftId) -> DraftDetail:
        """One draft in full; its receipts: list_receipts."""
        with tool_errors():
            return await in_worker(queries.get_draft, self.monitor, self.principal(), draft_id)

    async def triage_draft(self, draft_id: DraftId) -> TriageResult:
        """Deterministic triage of a draft."""
        with tool_errors():
            return await in_worker(triage.triage_draft, self.monitor, self.principal(), draft_id)

    async def preview_route(
        self,
        draft_id: Annotated[DraftId | None, Field(description="Preview an existing draft.")] = None,
        route_tags: list[ShortText] | None = None,
        risk_category: Annotated[str | None, Field(max_length=200)] = None,
        risk_level: Severity | None = None,
        level: Annotated[str | None, Field(max_length=40)] = None,
        source: Annotated[str | None, Field(max_length=200)] = None,
        project_id: Annotated[str | None, Field(max_length=200)] = None,
        event: Annotated[str | None, Field(max_length=200)] = None,
    ) -> RouteDecision:
        """What publish_draft would decide, without publishing."""
        with tool_errors():
            return await in_worker(
                route_preview.preview_route,
                self.monitor,
                self.principal(),
                draft_id=draft_id,
                route_tags=route_tags,
                risk_category=risk_category,
                risk_level=risk_level,
                level=level,
                source=source,
                project_id=project_id,
                event=event,
            )

    async def request_approval(
        self,
        draft_id: DraftId,
        reason: Annotated[str, Field(min_length=1, max_length=2000, description="Why this should be published.")],
    ) -> ApprovalResult:
        """Ask an operator to approve publishing the draft's current evidence."""
        with tool_errors():
            return await in_worker(approvals.request_approval, self.monitor, self.principal(), draft_id, reason)

    async def decide_approval(
        self,
        approval_id: ApprovalId,
        decision: Literal["approve", "deny"],
        note: Annotated[str, Field(min_length=1, max_length=2000, description="Why; recorded in the audit log.")],
    ) -> ApprovalResult:
        """Approve or deny a pending approval (operators; never the principal that asked)."""
        with tool_errors():
            return await in_worker(
                approvals.decide_approval, self.monitor, self.principal(), approval_id, decision, note
            )

    async def publish_draft(self, draft_id: DraftId) -> PublishResult:
        """Publish through the policy gates to the routed destination."""
        with tool_errors():
            # Claim and settle (SQLite, fsync) in worker threads like every tool's service call; the adapter's
            # delivery, async I/O, is awaited on the loop.
            return await publishing.publish_draft(self.monitor, self.principal(), draft_id, run=in_worker)

    async def list_receipts(
        self,
        draft_id: DraftId | None = None,
        incident_id: IncidentId | None = None,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> ReceiptPage:
        """Publish receipts, newest first."""
        with tool_errors():
            return await in_worker(
                queries.list_receipts,
                self.monitor,
                self.principal(),
                draft_id=draft_id,
                incident_id=incident_id,
                limit=limit,
                offset=offset,
            )

    async def resolve_incident(
        self,
        incident_id: IncidentId,
        resolution_note: Annotated[str, Field(min_length=1, max_length=2000, description="What fixed it.")],
    ) -> IncidentBase:
        """Resolve an incident with a note. It stays for audit; a recurrence reopens it."""
        with tool_errors():
            return await in_worker(
                incidents.resolve_incident, self.monitor, self.principal(), incident_id, resolution_note
            )

    async def get_authority_inventory(self) -> inventory.AuthorityInventory:
        """What the agents can do and where evidence can go: tools and scopes, principals, tokens and intake
        keys (never secrets or hashes), destinations (kind, readiness, approval; no config values), routes,
        outbound MCP servers with their tool allowlists, approval policy."""
        with tool_errors():
            return await in_worker(inventory.get_authority_inventory, self.monitor, self.principal(), tool_catalog())

    async def run_posture_checks(
        self,
        rules: Annotated[
            list[ShortText] | None, Field(description="Rule ids to run (default: all; see the README).")
        ] = None,
        min_severity: Annotated[Severity, Field(description="Only findings at or above this severity.")] = (
            Severity.low
        ),
    ) -> posture.PostureReport:
        """Deterministic governance findings over the inventory and recent decisions: rule id, severity,
        evidence refs and a recommendation each."""
        with tool_errors():
            return await in_worker(
                posture.run_posture_checks,
                self.monitor,
                self.principal(),
                tool_catalog(),
                rules=rules,
                min_severity=min_severity,
            )

    async def run_assessment_probes(
        self,
        probes: Annotated[list[ShortText] | None, Field(description="Probe ids to run (default: all).")] = None,
    ) -> assessment_probes.ProbeReport:
        """Dry-run checks that the controls hold (approval, high-risk preview, unready destinations, intake keys,
        MCP allowlists, webhook URL policy), run against an in-memory copy: nothing is stored or sent."""
        with tool_errors():
            return await assessment_probes.run_assessment_probes(
                self.monitor, self.principal(), tool_catalog(), probes=probes
            )

    async def build_assessment_report(self) -> report.AssessmentReport:
        """A redacted assessment report (JSON sections and a Markdown rendering) with evidence refs and
        recommendations: inventory, posture findings, probe results, deployment cards."""
        with tool_errors():
            return await report.build_assessment_report(self.monitor, self.principal(), tool_catalog())

    async def build_deployment_cards(self) -> cards.DeploymentCards:
        """One card per agent principal, per monitored source, and one for the monitor: owner, team, autonomy,
        allowed and prohibited actions, authority, data classification, approval and escalation, limitations,
        risks, review cadence. Missing required facts are reported as findings."""
        with tool_errors():
            return await in_worker(cards.build_deployment_cards, self.monitor, self.principal(), tool_catalog())

    async def list_sources(self) -> log_sources.SourceList:
        """Tailed log files; problem null means ready."""
        with tool_errors():
            return await in_worker(log_sources.list_sources, self.monitor, self.principal())

    async def request_code_change(
        self,
        incident_id: IncidentId,
        repository: Annotated[str, Field(min_length=1, max_length=200, description="e.g. 'acme/app'.")],
        instructions: Annotated[str, Field(min_length=1, max_length=10_000, description="What to change.")],
    ) -> code_changes.CodeChangeRequested:
        """Draft a code change for a coding-agent platform (the brief: incident, instructions, investigation).
        Then request_approval and publish_draft launch it."""
        with tool_errors():
            return await in_worker(
                code_changes.request_code_change,
                self.monitor,
                self.principal(),
                incident_id,
                repository,
                instructions,
            )

    async def follow_up_code_change(
        self,
        run_id: RunId,
        instructions: Annotated[str, Field(min_length=1, max_length=10_000, description="What to change next.")],
    ) -> code_changes.CodeChangeRequested:
        """Draft follow-up instructions for a launched code change (same PR); approve and publish_draft send them."""
        with tool_errors():
            return await in_worker(
                code_changes.follow_up_code_change, self.monitor, self.principal(), run_id, instructions
            )

    async def stop_code_change(self, run_id: RunId) -> CodeChangeView:
        """Stop a code change on its platform (best effort)."""
        with tool_errors():
            return await code_changes.stop_code_change(self.monitor, self.principal(), run_id)

    async def get_code_change(self, run_id: RunId) -> CodeChangeView:
        """One code change in full."""
        with tool_errors():
            return await in_worker(code_changes.get_code_change, self.monitor, self.principal(), run_id)

    async def list_code_changes(self, incident_id: IncidentId | None = None) -> code_changes.CodeChangePage:
        """Code change summaries, newest first."""
        with tool_errors():
            return await in_worker(code_changes.list_code_changes, self.monitor, self.principal(), incident_id)


INSTRUCTIONS = """\
Incident Monitor: governed incident evidence. Safe sequence: get_status -> preview_route -> report_incident ->
list_drafts/get_draft -> triage_draft -> request_approval (an operator decides) -> publish_draft -> list_receipts.
Publish only through publish_draft, never by calling GitHub, Linear, webhooks or other MCP tools yourself.
Results carry next_step, the call to make next. Errors read "code: message" and say what to call next.
A result holds every field of its output schema (null when empty)."""


def agent_facing_tool(fn: Callable[..., Any], name: str, annotations: ToolAnnotations) -> Tool:
    """A tool whose input schema is self-contained and small (server/tool_schemas.py); its output schema is
    compacted by ``agent_facing_tools``, once the value sets an output writes as plain strings are known."""
    description = " ".join(inspect.cleandoc(fn.__doc__ or "").split())
    tool = Tool.from_function(fn, name=name, description=description, annotations=annotations, structured_output=True)
    tool.parameters = compact_schema(tool.parameters)
    assert tool.fn_metadata.output_schema is not None, f"{name} must return a model (structured output)"
    return tool


def read_tool_value_sets(tools: list[Tool]) -> frozenset[tuple[Any, ...]]:
    """The value sets (enums) on the inputs of the read tools: an agent reads them where it chooses a value (the
    filters of list_incidents and list_drafts), and every agent holds the read scope, so results need not repeat
    them (issue 10's tools/list budget). Value sets that are no input anywhere (receipt, approval and code-change
    states, decisions) stay enums in results."""
    found: set[tuple[Any, ...]] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            values = enum_values(node)
            if values is not None:
                found.add(values)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for tool in tools:
        if ACTION_SCOPES.get(tool.name) == frozenset({READ}):
            walk(tool.parameters)
    return frozenset(found)


def agent_facing_tools(tools: IncidentMonitorTools) -> list[Tool]:
    # Each tool derived once (Tool.from_function builds its arguments model and schemas: the most of a server's
    # start-up that is its own); the outputs are compacted after, from the inputs' value sets (issue 18).
    registered = [agent_facing_tool(getattr(tools, name), name, hints) for name, hints in TOOL_ANNOTATIONS.items()]
    listed = read_tool_value_sets(registered)
    for tool in registered:
        output_schema = tool.fn_metadata.output_schema
        assert output_schema is not None, f"{tool.name} must return a model (structured output)"
        tool.fn_metadata.output_schema = compact_schema(output_schema, output=True, listed=listed)
    return registered


def build_mcp_server(monitor: Monitor, resolve_principal: Callable[[], Principal]) -> MCPServer:
    # The gate resolves the caller once per tools/call; the tool reads that same principal (server/principals.py).
    principal = RequestPrincipal(resolve_principal)
    registered = agent_facing_tools(IncidentMonitorTools(monitor, principal))
    server = MCPServer(
        name="incident-monitor",
        version=__version__,
        instructions=INSTRUCTIONS,
        tools=registered,
        # Keys shared by every replica (environment), so a retry landing on another replica unseals its state.
        request_state_security=request_state_security(),
    )
    server.middleware.append(ToolErrorShape())
    server.middleware.append(ScopeGate(monitor, principal, {tool.name: tool.fn_metadata for tool in registered}))
    _add_inventory_resources(server, monitor, principal)
    accept_logging_level(server)
    return server


INVENTORY_URI = "incident-monitor://inventory"


def _add_inventory_resources(server: MCPServer, monitor: Monitor, principal: Callable[[], Principal]) -> None:
    """The inventory as resources: the whole of it and one per section. Reading one is the governed
    action get_authority_inventory (scope-checked and audited; denied without the governance scope)."""

    def reader(section: str | None) -> Callable[[], str]:
        def read() -> str:
            try:
                view = inventory.get_authority_inventory(monitor, principal(), tool_catalog(), section=section)
            except MonitorError as exc:
                raise ResourceError(f"{exc.code}: {exc.message}") from None
            data = view.model_dump(mode="json")
            return json.dumps(data if section is None else {section: data[section]}, indent=2)

        return read

    server.resource(INVENTORY_URI, name="authority-inventory", mime_type="application/json")(reader(None))
    for section in inventory.INVENTORY_SECTIONS:
        server.resource(f"{INVENTORY_URI}/{section}", name=f"inventory-{section}", mime_type="application/json")(
            reader(section)
        )
