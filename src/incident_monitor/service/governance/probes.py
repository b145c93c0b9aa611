"""Assessment probes: dry-run checks that the governance controls hold, with no side effects.

Each probe drives the real services (intake, routing, approvals, publishing, the scope policy)
against a *scratch copy* of this monitor: the same config and policy over an empty in-memory
database, with every destination adapter replaced by a stand-in that reports the real (or a
forced) readiness and never delivers. So the probes exercise the real gates while nothing is
written to the monitor's database (only the audit row of the probe call itself) and no
destination is ever called.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from sqlalchemy.pool import StaticPool
from sqlmodel import SQLModel, create_engine

from incident_monitor.config import MonitorConfig
from incident_monitor.destinations.base import DestinationAdapter, PublishOutcome, PublishRequest
from incident_monitor.destinations.registry import build_adapter
from incident_monitor.destinations.settings import DestinationConfig, McpToolConfig, WebhookConfig
from incident_monitor.domain.enums import Severity
from incident_monitor.domain.io import IncidentReport
from incident_monitor.domain.levels import LEVEL_FOR_SEVERITY
from incident_monitor.domain.readiness import Readiness
from incident_monitor.errors import ApprovalRequired, InvalidInput, MonitorError, PermissionDenied
from incident_monitor.policy.principal import Principal
from incident_monitor.policy.redaction import redact_text
from incident_monitor.policy.scopes import DEFAULT_AGENT_SCOPES, REPORT
from incident_monitor.service import approvals, intake, publishing, queries, route_preview, status, triage
from incident_monitor.service.governance.inventory import (
    AuthorityInventory,
    RouteEntry,
    ToolEntry,
    collect_inventory,
    subject_for_route,
)
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor

ProbeStatus = Literal["passed", "failed", "not_applicable"]
PROBE_AGENT = Principal(name="probe:agent", scopes=DEFAULT_AGENT_SCOPES, kind="system")
# The scopes an intake key is issued with (DESIGN.md: report only), probed when no key exists yet.
INTAKE_KEY_DEFAULT_SCOPES = frozenset({REPORT})
_PRIVATE_TARGETS = (
    "https://10.0.0.8/hook",
    "https://127.0.0.1/hook",
    "https://169.254.169.254/latest",
    "https://[::1]/hook",
)


class ProbeCheck(BaseModel):
    name: str
    expected: str
    observed: str
    passed: bool | None = None  # None: could not be checked here (see observed)


class ProbeResult(BaseModel):
    probe_id: str
    title: str
    status: ProbeStatus
    checks: list[ProbeCheck]
    evidence_refs: list[str]
    recommendation: str


class ProbeReport(BaseModel):
    generated_at: datetime
    dry_run: bool = True
    side_effects: str = "none: ran against an in-memory copy of the config; no destination adapter was called"
    probes: list[ProbeResult]
    counts: dict[str, int]


# --- the scratch copy --------------------------------------------------------------------------------


class _StandIn(DestinationAdapter[DestinationConfig]):
    """Replaces a real adapter in the scratch copy: real or forced readiness, never delivers."""

    kind = "probe-stand-in"

    def __init__(self, real: DestinationAdapter[Any], forced: bool | None, deliveries: list[str]) -> None:
        super().__init__(real.config, data_dir=real.data_dir)
        self._real = real
        self._forced = forced
        self._deliveries = deliveries

    def readiness(self) -> Readiness:
        if self._forced is None:
            return self._real.readiness()
        return Readiness(ready=self._forced, reasons=[] if self._forced else ["assessment probe: assumed not ready"])

    async def _deliver(self, request: PublishRequest) -> PublishOutcome:
        self._deliveries.append(request.receipt_id)
        return PublishOutcome(status="failed", attempts=0, error="assessment probe: delivery suppressed")


@dataclass
class _Scratch:
    monitor: Monitor
    deliveries: list[str]


def _scratch(monitor: Monitor, *, ready: dict[str, bool] | None = None, default_ready: bool | None = True) -> _Scratch:
    engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    SQLModel.metadata.create_all(engine)
    # No self-monitoring inside the copy: its denials are the probe's expected outcomes.
    config = monitor.config.model_copy(
        update={"self_monitoring": monitor.config.self_monitoring.model_copy(update={"enabled": False})}
    )
    deliveries: list[str] = []
    forced = ready or {}
    adapters: dict[str, DestinationAdapter[Any]] = {
        destination_id: _StandIn(real, forced.get(destination_id, default_ready), deliveries)
        for destination_id, real in monitor.destinations.items()
    }
    return _Scratch(Monitor(config, engine, monitor.data_dir, adapters, clock=monitor.clock), deliveries)


def _report_for(route: RouteEntry, config: MonitorConfig, severity: Severity, title: str) -> IncidentReport:
    if route.is_default:
        return IncidentReport(
            title=title, source="assessment-probe", event="assessment.probe.failed", level=LEVEL_FOR_SEVERITY[severity]
        )
    settings = next(r for r in config.routes if r.id == route.route_id)
    subject = subject_for_route(settings, severity)
    return IncidentReport(
        title=title,
        detail="Dry-run assessment probe (scratch copy; nothing is published).",
        source=subject.source or "assessment-probe",
        event=subject.event or "assessment.probe.failed",
        level=LEVEL_FOR_SEVERITY[subject.severity],
        route_tags=list(subject.route_tags),
        risk_category=subject.risk_category,
        project_id=subject.project_id,
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, MonitorError):
        return redact_text(f"{exc.code}: {exc.message}")[:300]
    return type(exc).__name__


def _label(route: RouteEntry) -> str:
    return "the default destination policy" if route.is_default else f"route {route.route_id}"


def _result(probe_id: str, title: str, checks: list[ProbeCheck], refs: list[str], recommendation: str) -> ProbeResult:
    outcomes = [c.passed for c in checks]
    probe_status: ProbeStatus = "failed" if False in outcomes else "passed" if True in outcomes else "not_applicable"
    return ProbeResult(
        probe_id=probe_id,
        title=title,
        status=probe_status,
        checks=checks,
        evidence_refs=refs,
        recommendation=recommendation if probe_status == "failed" else "",
    )


# --- the probes ----------------------------------------------------------------------------------------


async def probe_approval_required_enforced(monitor: Monitor, inventory: AuthorityInventory) -> ProbeResult:
    """Where policy says approval is required, publishing without one is refused and nothing is sent."""
    checks, refs = [], []
    for route in inventory.routes:
        if not (route.approval_required_low_risk or route.approval_required_high_risk):
            continue
        severity = Severity.low if route.approval_required_low_risk else Severity.critical
        scratch = _scratch(monitor)
        name = f"publish without approval via {_label(route)}"
        refs.append(f"route:{route.route_id or '(default)'}")
        try:
            report = _report_for(route, monitor.config, severity, "Assessment probe: approval gate")
            reported = intake.report_incident(scratch.monitor, PROBE_AGENT, report)
            assert reported.draft_id is not None
            preview = route_preview.preview_route(scratch.monitor, PROBE_AGENT, draft_id=reported.draft_id)
            if preview.route_id != route.route_id or not preview.approval_required:
                checks.append(
                    ProbeCheck(
                        name=name,
                        expected="approval_required",
                        observed="another route claims the probe report; not checked",
                        passed=None,
                    )
                )
                continue
            await publishing.publish_draft(scratch.monitor, PROBE_AGENT, reported.draft_id)
            observed = "published without approval"
        except ApprovalRequired as exc:
            observed = _describe(exc)
        except MonitorError as exc:
            observed = _describe(exc)
        ok = observed.startswith("approval_required") and not scratch.deliveries
        checks.append(
            ProbeCheck(name=name, expected="approval_required, nothing delivered", observed=observed, passed=ok)
        )
    return _result(
        "approval-required-enforced",
        "Approval-required policy is enforced at publish",
        checks,
        refs,
        "publishing must refuse drafts whose route requires approval until an operator approves",
    )


async def probe_high_risk_preview_requires_approval(monitor: Monitor, inventory: AuthorityInventory) -> ProbeResult:
    checks, refs = [], []
    for route in inventory.routes:
        if not route.can_carry_high_risk:
            continue
        scratch = _scratch(monitor)
        report = _report_for(route, monitor.config, Severity.critical, "Assessment probe: high-risk preview")
        refs.append(f"route:{route.route_id or '(default)'}")
        decision = route_preview.preview_route(
            scratch.monitor,
            PROBE_AGENT,
            route_tags=report.route_tags,
            risk_category=report.risk_category,
            level="critical",
            source=report.source,
            project_id=report.project_id,
            event=report.event,
        )
        name = f"critical preview via {_label(route)}"
        if decision.route_id != route.route_id:
            checks.append(
                ProbeCheck(
                    name=name,
                    expected="approval_required: true",
                    observed="another route claims the probe report; not checked",
                    passed=None,
                )
            )
            continue
        checks.append(
            ProbeCheck(
                name=name,
                expected="approval_required: true",
                observed=f"approval_required: {str(decision.approval_required).lower()} "
                f"({'; '.join(decision.approval_reasons)})",
                passed=decision.approval_required,
            )
        )
    return _result(
        "high-risk-preview-requires-approval",
        "A high-risk route preview demands approval",
        checks,
        refs,
        "give every route that can carry high or critical drafts an approval policy that requires approval",
    )


async def probe_unready_destination_fails_closed(monitor: Monitor, inventory: AuthorityInventory) -> ProbeResult:
    checks, refs = [], []
    for destination in inventory.destinations:
        routes = [r for r in inventory.routes if r.destination_id == destination.destination_id]
        if not routes:
            continue
        route = routes[0]
        scratch = _scratch(monitor, ready={destination.destination_id: False})
        refs.append(f"destination:{destination.destination_id}")
        name = f"publish to {destination.destination_id} while not ready (via {_label(route)})"
        try:
            report = _report_for(route, monitor.config, Severity.low, "Assessment probe: unready destination")
            reported = intake.report_incident(scratch.monitor, PROBE_AGENT, report)
            assert reported.draft_id is not None
            preview = route_preview.preview_route(scratch.monitor, PROBE_AGENT, draft_id=reported.draft_id)
            if preview.destination_id != destination.destination_id:
                checks.append(
                    ProbeCheck(
                        name=name,
                        expected="publish_blocked",
                        observed="another route claims the probe report; not checked",
                        passed=None,
                    )
                )
                continue
            await publishing.publish_draft(scratch.monitor, PROBE_AGENT, reported.draft_id)
            observed = "publish went ahead"
        except MonitorError as exc:
            observed = _describe(exc)
        ok = observed.startswith("publish_blocked") and not scratch.deliveries
        checks.append(
            ProbeCheck(name=name, expected="publish_blocked, nothing delivered", observed=observed, passed=ok)
        )
    return _result(
        "unready-destination-fails-closed",
        "A destination that is not ready fails closed",
        checks,
        refs,
        "routing must block publishes to a destination that is not ready",
    )


async def probe_intake_key_cannot_read_preview_publish(monitor: Monitor, inventory: AuthorityInventory) -> ProbeResult:
    # Seam (remote issue #4): the real keys' scopes come from the inventory; until keys exist, the
    # scope set keys are issued with is probed.
    keys = [(f"intake-key:{k.key_id}", frozenset(k.scopes)) for k in inventory.intake_keys if k.status == "active"]
    keys = keys or [("intake-key:(report-only)", INTAKE_KEY_DEFAULT_SCOPES)]
    checks, refs = [], []
    scratch = _scratch(monitor)
    seeded = intake.report_incident(
        scratch.monitor,
        PROBE_AGENT,
        IncidentReport(
            title="Assessment probe: intake key", source="assessment-probe", event="assessment.probe.failed"
        ),
    )
    draft_id = seeded.draft_id or ""
    for name, scopes in keys:
        key = Principal(name=name, scopes=scopes, kind="intake_key")
        refs.append(f"intake_key:{name.removeprefix('intake-key:')}")
        attempts = _key_attempts(scratch.monitor, key, seeded.incident_id, draft_id)
        for action, attempt in attempts:
            refused = False
            try:
                outcome = attempt()
                if isinstance(outcome, Awaitable):
                    await outcome
                observed = "allowed"
            except PermissionDenied as exc:  # insufficient_scope included (a subclass)
                refused, observed = True, _describe(exc)
            except MonitorError as exc:
                observed = "got past the scope check: " + _describe(exc)
            checks.append(
                ProbeCheck(
                    name=f"{name} calls {action}",
                    expected="refused by the scope check",
                    observed=observed,
                    passed=refused and not scratch.deliveries,
                )
            )
    return _result(
        "intake-key-cannot-read-preview-publish",
        "An intake key can only report",
        checks,
        refs,
        "issue intake keys with incident_monitor:report only",
    )


def _key_attempts(
    monitor: Monitor, key: Principal, incident_id: str, draft_id: str
) -> list[tuple[str, Callable[[], object]]]:
    """Everything an intake key must not do, as calls on the scratch copy."""
    return [
        ("get_status", lambda: status.get_status(monitor, key)),
        ("list_incidents", lambda: queries.list_incidents(monitor, key)),
        ("get_incident", lambda: queries.get_incident(monitor, key, incident_id)),
        ("list_drafts", lambda: queries.list_drafts(monitor, key)),
        ("get_draft", lambda: queries.get_draft(monitor, key, draft_id)),
        ("preview_route", lambda: route_preview.preview_route(monitor, key, draft_id=draft_id)),
        ("triage_draft", lambda: triage.triage_draft(monitor, key, draft_id)),
        ("request_approval", lambda: approvals.request_approval(monitor, key, draft_id, "probe")),
        ("publish_draft", lambda: publishing.publish_draft(monitor, key, draft_id)),
        ("list_receipts", lambda: queries.list_receipts(monitor, key)),
    ]


async def probe_outbound_mcp_allowlist(monitor: Monitor, inventory: AuthorityInventory) -> ProbeResult:
    checks, refs = [], []
    for server in inventory.outbound_mcp_servers:
        refs.append(f"outbound_mcp:{server.destination_id}")
        # The adapter's own rule, the one its delivery path applies (no network).
        config = monitor.destinations[server.destination_id].config
        assert isinstance(config, McpToolConfig)
        allowed = config.allows_tool
        source = "adapter"
        checks.append(
            ProbeCheck(
                name=f"{server.destination_id} has a tool allowlist",
                expected="allowed_tools is set",
                observed=f"allowed_tools = {server.allowed_tools}",
                passed=bool(server.allowed_tools),
            )
        )
        unlisted = "assessment_probe_unlisted_tool"
        checks.append(
            ProbeCheck(
                name=f"{server.destination_id} refuses a tool not on the allowlist",
                expected="refused",
                observed=f"{'allowed' if allowed(unlisted) else 'refused'} ({source})",
                passed=not allowed(unlisted),
            )
        )
        if server.tool:
            checks.append(
                ProbeCheck(
                    name=f"{server.destination_id}'s configured tool is on its allowlist",
                    expected="allowed",
                    observed=f"{'allowed' if allowed(server.tool) else 'refused'} ({source})",
                    passed=allowed(server.tool),
                )
            )
    return _result(
        "outbound-mcp-allowlist-enforced",
        "Outbound MCP tool allowlists are enforced",
        checks,
        refs,
        "set allowed_tools on every MCP-tool destination, listing only the tool it publishes with",
    )


def _webhook_refuses(url: str) -> tuple[bool, str]:
    """Whether the webhook policy refuses this target: at config validation or as not ready."""
    try:
        config = WebhookConfig(id="assessment-probe", url=url, secret=None)
    except ValidationError as exc:
        return True, "refused by config validation: " + "; ".join(e["msg"] for e in exc.errors(include_input=False))
    reasons = build_adapter(config, Path()).readiness().reasons
    relevant = [r for r in reasons if "secret" not in r]  # the probe sets no secret on purpose
    return bool(relevant), ("not ready: " + "; ".join(relevant)) if relevant else "accepted"


async def probe_webhook_url_policy(monitor: Monitor, inventory: AuthorityInventory) -> ProbeResult:
    checks = []
    refused, observed = _webhook_refuses("http://hooks.example.com/incident")
    checks.append(ProbeCheck(name="plain http:// target", expected="refused", observed=observed, passed=refused))
    # Seam (destinations issue #3): private-network refusal arrives with `allow_private_networks`.
    private_policy = "allow_private_networks" in WebhookConfig.model_fields
    for url in _PRIVATE_TARGETS:
        if not private_policy:
            checks.append(
                ProbeCheck(
                    name=f"private target {url}",
                    expected="refused",
                    observed="not checked: this build's webhook policy has no private-network rule yet",
                    passed=None,
                )
            )
            continue
        refused, observed = _webhook_refuses(url)
        checks.append(ProbeCheck(name=f"private target {url}", expected="refused", observed=observed, passed=refused))
    refs = [f"destination:{d.destination_id}" for d in inventory.destinations if d.kind == "webhook"]
    return _result(
        "webhook-url-policy",
        "The webhook URL policy refuses http and private targets",
        checks,
        refs,
        "keep https-only (allow_insecure_http = false) and refuse private network targets",
    )


ProbeFn = Callable[[Monitor, AuthorityInventory], Awaitable[ProbeResult]]
PROBES: dict[str, ProbeFn] = {
    "approval-required-enforced": probe_approval_required_enforced,
    "high-risk-preview-requires-approval": probe_high_risk_preview_requires_approval,
    "unready-destination-fails-closed": probe_unready_destination_fails_closed,
    "intake-key-cannot-read-preview-publish": probe_intake_key_cannot_read_preview_publish,
    "outbound-mcp-allowlist-enforced": probe_outbound_mcp_allowlist,
    "webhook-url-policy": probe_webhook_url_policy,
}


async def run_probes(
    monitor: Monitor, inventory: AuthorityInventory, probes: Sequence[str] | None = None
) -> ProbeReport:
    selected = list(probes) if probes else list(PROBES)
    unknown = [p for p in selected if p not in PROBES]
    if unknown:
        # The ids sent are not repeated: a caller's text may carry a secret.
        raise InvalidInput(
            f"probes: {len(unknown)} unknown probe id(s), not repeated here; known probes: {', '.join(PROBES)}"
        )
    results = [await PROBES[p](monitor, inventory) for p in selected]
    counts = {s: sum(1 for r in results if r.status == s) for s in ("passed", "failed", "not_applicable")}
    return ProbeReport(
        generated_at=inventory.generated_at,
        probes=results,
        counts=counts,
    )


async def run_assessment_probes(
    monitor: Monitor, principal: Principal, tools: Sequence[ToolEntry], *, probes: Sequence[str] | None = None
) -> ProbeReport:
    with governed_call(
        monitor, principal, "run_assessment_probes", {"probes": list(probes) if probes else None}, defer_unit=True
    ) as call:
        # A short read of its own: the call's unit of work (and the database's write lock) is taken only for
        # the audit row at the end (defer_unit), never held across the awaits while the probes run.
        with monitor.session() as session:
            inventory = collect_inventory(monitor, session, tools)
        report = await run_probes(monitor, inventory, probes)
        call.notes.append(f"dry run: {report.counts}")
        return report
