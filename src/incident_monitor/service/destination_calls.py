"""The publishing service's calls to a destination beside a publish: a run's status, stopping it, a connection test.

Part of the publishing service (with service/publishing.py): destinations are reached only from these two modules
(tests/architecture/test_destination_reach.py). A publish goes through the permit and outbox in publishing.py; the
calls here change nothing a receipt records, so they have a lighter gate — the destination must be configured,
of the kind the call is for, and ready (enabled, its URL allowed, its token present) — and their callers hold the
governed decision: ``stop_code_change`` (scope ``code_change``), ``ping_destination`` (``admin``, below), and
the poller (``system:code-change``, one replica per run under a lease).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import anyio
from pydantic import BaseModel

from incident_monitor.destinations.base import CallFailed
from incident_monitor.domain.code_change import PlatformStatus
from incident_monitor.errors import InvalidInput
from incident_monitor.policy.principal import Principal
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor

if TYPE_CHECKING:
    from incident_monitor.destinations.coding_agent import CodingAgentAdapter

__all__ = ["CallFailed", "PingResult", "ping_destination", "run_status", "stop_run"]


def _coding_agent(monitor: Monitor, destination_id: str) -> CodingAgentAdapter:
    adapter = monitor.destinations.get(destination_id)
    if adapter is None or adapter.kind != "coding_agent":
        raise CallFailed(f"destination '{destination_id}' is not a configured coding_agent destination")
    readiness = monitor.readiness(destination_id)  # disabled (a 410, or by an operator) included
    if not readiness.ready:
        raise CallFailed(f"destination '{destination_id}' is not ready: " + "; ".join(readiness.reasons))
    return cast("CodingAgentAdapter", adapter)


async def run_status(monitor: Monitor, destination_id: str, platform_run_id: str) -> PlatformStatus:
    """``GET /agents/{id}``: the platform's validated answer; CallFailed says what went wrong."""
    return await _coding_agent(monitor, destination_id).run_status(platform_run_id)


async def stop_run(monitor: Monitor, destination_id: str, platform_run_id: str) -> None:
    """``POST /agents/{id}/stop`` (best effort; the platform's 404 counts as stopped)."""
    await _coding_agent(monitor, destination_id).stop(platform_run_id)


class PingResult(BaseModel):
    destination_id: str
    ok: bool
    detail: str


async def ping_destination(monitor: Monitor, principal: Principal, destination_id: str) -> PingResult:
    """``GET /ping`` on a coding-agent destination ("Test connection"), saying what failed."""

    def decide() -> None:
        with governed_call(monitor, principal, "ping_destination", {"destination_id": destination_id}):
            config = monitor.config.destination(destination_id)
            if config is None or config.kind != "coding_agent":
                raise InvalidInput(
                    f"destination_id: '{destination_id}' is not a configured coding_agent destination; "
                    "`incident-monitor destinations list` shows them (ping tests coding_agent destinations)"
                )

    await anyio.to_thread.run_sync(decide)
    try:
        await _coding_agent(monitor, destination_id).ping()
    except CallFailed as exc:
        return PingResult(destination_id=destination_id, ok=False, detail=str(exc))
    return PingResult(destination_id=destination_id, ok=True, detail="GET /ping answered 200: reachable, token valid")
