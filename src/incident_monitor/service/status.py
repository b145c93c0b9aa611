"""Readiness: can the monitor take reports, preview routes and publish, per destination.

Publishing is judged on the destinations something can reach (a route's, or the default one): one of
them not ready, or failing its latest publish, makes publishing ``degraded`` with a problem naming
the destination and the fix; none of them ready makes it ``not_ready``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field
from sqlalchemy import Connection, func, select

from incident_monitor import __version__
from incident_monitor.domain.enums import ApprovalStatus, IncidentStatus
from incident_monitor.domain.models import ApprovalRequest, Incident, table_of
from incident_monitor.policy.principal import Principal
from incident_monitor.service.destination_health import read_deliveries, read_disabled_on
from incident_monitor.service.governed import governed_call
from incident_monitor.service.log_sources import source_readiness
from incident_monitor.service.monitor import Monitor
from incident_monitor.store.engine import read_scope
from incident_monitor.store.faults import StoreFault, store_health

PublishState = Literal["ready", "degraded", "not_ready"]

# Both counts in one Core statement, compiled once: get_status is the call agents make first and often,
# and the ORM's per-call statement building cost more than the counting (issue 18).
_INCIDENTS, _APPROVALS = table_of(Incident), table_of(ApprovalRequest)
_COUNTS = select(
    select(func.count())
    .select_from(_INCIDENTS)
    .where(_INCIDENTS.c.status != IncidentStatus.resolved)
    .scalar_subquery(),
    select(func.count()).select_from(_APPROVALS).where(_APPROVALS.c.status == ApprovalStatus.pending).scalar_subquery(),
)
DEFAULT_ROUTE = "default"  # how the default destination appears in ``routed_from``


class Readiness(BaseModel):
    config_valid: bool
    ingest_ready: bool
    route_preview_ready: bool
    publish_ready: bool  # true only when publish_state is "ready"
    # ready: every destination a route or the default destination reaches is ready and its latest publish
    # succeeded (or none was tried); degraded: some are not; not_ready: none is, or nothing is routable.
    publish_state: PublishState  # degraded or not_ready: problems say which, and the fix
    source_ready: dict[str, bool] = Field(default_factory=dict)


class DestinationStatus(BaseModel):
    destination_id: str
    kind: str
    enabled: bool
    ready: bool
    reasons: list[str]
    approval_required_by_default: bool
    routed_from: list[str] = Field(
        default_factory=list,
        description=f"Routes here ('{DEFAULT_ROUTE}': default).",
    )
    consecutive_failures: int = 0  # failed publishes in a row (0 after a success)
    last_error: str | None = None  # the latest failed publish's error
    last_error_at: datetime | None = None
    last_published_at: datetime | None = None


class DownstreamStatus(BaseModel):
    downstream_id: str
    connected: bool
    allowed: list[str]
    blocked: list[str]
    error: str | None


def downstream_status(monitor: Monitor) -> list[DownstreamStatus]:
    """The guarded downstream MCP servers (tool names as the downstream calls them)."""
    return [
        DownstreamStatus(
            downstream_id=c.id,
            connected=c.connected,
            allowed=sorted(c.tools.allowed),
            blocked=sorted([*c.tools.blocked, *c.tools.not_read_only]),
            error=c.last_error,
        )
        for c in monitor.downstream
    ]


class CallerView(BaseModel):
    principal: str
    scopes: list[str]


class StatusView(BaseModel):
    version: str
    policy_version: str
    readiness: Readiness
    destinations: list[DestinationStatus]
    routes: int
    default_destination: str | None
    open_incidents: int
    pending_approvals: int
    caller: CallerView
    downstream: list[DownstreamStatus]
    problems: list[str] = Field(description="What is not ready, and the fix.")


@dataclass(frozen=True)
class PublishReadiness:
    state: PublishState
    destinations: list[DestinationStatus]
    problems: list[str]

    @property
    def reachable(self) -> list[DestinationStatus]:
        return [d for d in self.destinations if d.routed_from]


def _routed_from(monitor: Monitor) -> dict[str, list[str]]:
    sources: dict[str, list[str]] = {}
    for route in monitor.config.routes:
        sources.setdefault(route.destination_id, []).append(route.id)
    if monitor.config.default_destination is not None:
        sources.setdefault(monitor.config.default_destination.destination_id, []).append(DEFAULT_ROUTE)
    return sources


def store_problem(monitor: Monitor) -> StoreFault | None:
    """Why the store cannot take writes now (full, read-only, out of reach), or None: /readyz's first check."""
    return store_health(monitor.engine).problem()


def publish_readiness(monitor: Monitor, connection: Connection | None = None) -> PublishReadiness:
    """Every destination's readiness and recent deliveries, and what they mean for publishing.

    Local reads only (no network), so probes and status can ask on every request: on ``connection`` (a
    governed call's own: two statements, no connection of their own), else outside any unit of work.
    """
    if connection is None:
        with read_scope(monitor.engine) as own:
            return publish_readiness(monitor, own)
    deliveries = read_deliveries(monitor, connection)
    disabled = read_disabled_on(connection)
    sources = _routed_from(monitor)
    destinations: list[DestinationStatus] = []
    problems: list[str] = []
    for config in monitor.config.destinations:
        readiness = monitor.readiness(config.id, disabled)
        reasons = list(readiness.reasons) if config.enabled else ["disabled in config"]
        routed_from = sources.get(config.id, [])
        record = deliveries.get(config.id)
        status = DestinationStatus(
            destination_id=config.id,
            kind=config.kind,
            enabled=config.enabled,
            ready=config.enabled and readiness.ready,
            reasons=reasons,
            approval_required_by_default=config.approval_required_by_default,
            routed_from=routed_from,
            consecutive_failures=record.consecutive_failures if record else 0,
            last_error=record.last_error if record else None,
            last_error_at=record.last_failed_at if record else None,
            last_published_at=record.last_published_at if record else None,
        )
        destinations.append(status)
        blocked = f" (publishes routed here by {', '.join(routed_from)} are blocked until then)" if routed_from else ""
        problems.extend(f"destination '{config.id}': {reason}{blocked}" for reason in reasons)
        if status.consecutive_failures and status.last_error_at is not None:
            problems.append(
                f"destination '{config.id}': {status.consecutive_failures} publish"
                f"{'es' if status.consecutive_failures > 1 else ''} in a row failed, "
                f"the latest at {status.last_error_at.isoformat()}: {status.last_error}. Fix what the error names, "
                "then publish the failed drafts again (list_receipts shows them; a re-publish is not duplicated)"
            )
    reachable = [d for d in destinations if d.routed_from]
    state: PublishState
    if not any(d.ready for d in reachable):
        state = "not_ready"
    elif all(d.ready and not d.consecutive_failures for d in reachable):
        state = "ready"
    else:
        state = "degraded"
    return PublishReadiness(state=state, destinations=destinations, problems=problems)


def get_status(monitor: Monitor, principal: Principal) -> StatusView:
    with governed_call(monitor, principal, "get_status", {}) as call:
        # Every read on the call's own connection (no second connection per read), and the counts are the
        # probe that the database answers: get_status is the call agents make first and often (issue 18).
        connection = call.connection()  # Core only: the call makes no ORM session
        problems: list[str] = []
        try:
            open_count, pending = connection.execute(_COUNTS).one()
            ingest_ready = True
        except Exception:
            open_count = pending = 0
            ingest_ready = False
            problems.append("database not reachable: check the data directory")
        publishing = publish_readiness(monitor, connection)
        problems.extend(publishing.problems)
        route_preview_ready = bool(monitor.config.routes or monitor.config.default_destination)
        if not route_preview_ready:
            problems.append("no routes and no default destination configured: every publish would be blocked")
        if not publishing.destinations:
            problems.append("no destinations configured: add [[destinations]] to the config")
        sources = source_readiness(monitor)
        problems.extend(f"log source '{i}': {problem}" for i, problem in sources.items() if problem)
        downstream = downstream_status(monitor)
        problems.extend(
            f"downstream '{d.downstream_id}' not connected ({d.error or 'connecting'}): its read tools are unavailable"
            for d in downstream
            if not d.connected
        )
        return StatusView(
            version=__version__,
            policy_version=monitor.config.policy_version,
            readiness=Readiness(
                config_valid=True,  # an invalid config stops startup, so a running server has a valid one
                ingest_ready=ingest_ready,
                route_preview_ready=route_preview_ready,
                publish_ready=publishing.state == "ready",
                publish_state=publishing.state,
                source_ready={i: problem is None for i, problem in sources.items()},
            ),
            destinations=publishing.destinations,
            routes=len(monitor.config.routes),
            default_destination=monitor.config.default_destination.destination_id
            if monitor.config.default_destination
            else None,
            open_incidents=open_count,
            pending_approvals=pending,
            caller=CallerView(principal=principal.name, scopes=sorted(principal.scopes)),
            downstream=downstream,
            problems=problems,
        )
