"""A monitor wired to the reference coding-agent platform (examples/coding_agent_platform.py) over real sockets.

The platform listens on 127.0.0.1; the monitor's HTTP app serves the status webhook on another port (its
``callback_base_url``), or nothing when a test wants polling only. The poller is driven by hand with the fake
clock (``code_change_status.poll_due``).
"""

from __future__ import annotations

import threading
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from incident_monitor.domain.code_change import CodeChangeView
from incident_monitor.domain.io import IncidentReport
from incident_monitor.domain.models import Receipt
from incident_monitor.policy.principal import local_operator
from incident_monitor.server.http_app import bind_socket
from incident_monitor.service import approvals, code_changes, intake, publishing
from incident_monitor.service.monitor import Monitor
from support.coding_agent_platform import CodingAgentPlatform, Request
from support.http_helpers import http_server
from support.monitors import FakeClock, MonitorFactory, principal

TOKEN_VARIABLE = "CODING_AGENT_TOKEN"
TOKEN = "platform-token-9f8e7d6c5b4a39281706"
CANARY = "ghp_" + "C4n4ryT0k3nAbCdEfGhIjKlMnOpQrStUvWx12"
REQUESTER = principal("responder", "read", "report", "code_change", "approval_request", "publish")
APPROVER = local_operator()
INSTRUCTIONS = "Guard cart.total() against an empty cart"


def agent_config(platform_url: str, callback: str | None, **overrides: Any) -> dict[str, Any]:
    """One coding_agent destination (plus telemetry as the default for everything else)."""
    destination: dict[str, Any] = {
        "id": "coding-agent",
        "kind": "coding_agent",
        "base_url": platform_url,
        "token": f"env:{TOKEN_VARIABLE}",
        "display_name": "Reference agent",
        "allow_insecure_http": True,
        "allow_private_networks": True,
        "callback_base_url": callback,
        "max_attempts": 1,
    }
    destination.update(overrides)
    return {
        "destinations": [destination, {"id": "telemetry", "kind": "telemetry"}],
        "default_destination": {"destination_id": "telemetry"},
    }


@dataclass
class World:
    monitor: Monitor
    platform: CodingAgentPlatform
    clock: FakeClock

    def incident(self, detail: str = f"TypeError in cart.total(); the deploy used {CANARY}") -> str:
        report = IncidentReport(
            title="Checkout crashes on empty cart", detail=detail, source="ci", event="ci.smoke.failed", level="error"
        )
        return intake.report_incident(self.monitor, REQUESTER, report).incident_id

    def approve(self, draft_id: str) -> None:
        asked = approvals.request_approval(self.monitor, REQUESTER, draft_id, "fix the crash")
        approvals.decide_approval(self.monitor, APPROVER, asked.approval.approval_id, "approve", "looks right")

    def request(self, incident_id: str, instructions: str = INSTRUCTIONS) -> code_changes.CodeChangeRequested:
        return code_changes.request_code_change(self.monitor, REQUESTER, incident_id, "acme/shop", instructions)

    async def launch(self, instructions: str = INSTRUCTIONS) -> tuple[str, str, Receipt]:
        """Report, request, approve, publish: (incident_id, run_id, the launch receipt)."""
        incident_id = self.incident()
        requested = self.request(incident_id, instructions)
        self.approve(requested.draft_id)
        result = await publishing.publish_draft(self.monitor, REQUESTER, requested.draft_id)
        return incident_id, requested.run_id, self.receipt(result.receipt.receipt_id)

    def receipt(self, receipt_id: str) -> Receipt:
        with self.monitor.session() as session:
            receipt = session.get(Receipt, receipt_id)
            assert receipt is not None
            session.expunge(receipt)
            return receipt

    def run(self, run_id: str) -> CodeChangeView:
        return code_changes.get_code_change(self.monitor, REQUESTER, run_id)

    def launches(self) -> list[Request]:
        return [r for r in self.platform.requests if r.method == "POST" and r.path == "/agents"]

    def polls(self, platform_run_id: str) -> list[Request]:
        return [r for r in self.platform.requests if r.method == "GET" and r.path == f"/agents/{platform_run_id}"]


def open_world(
    stack: ExitStack,
    make_monitor: MonitorFactory,
    clock: FakeClock,
    *,
    webhooks: bool = True,
    platform: CodingAgentPlatform | None = None,
    **platform_options: Any,
) -> World:
    """The platform (``platform_options`` are its knobs), a monitor configured for it and, with ``webhooks``, the
    monitor's HTTP app serving the webhook endpoint (without its background poller: tests poll by hand); all
    closed with ``stack``."""
    platform = stack.enter_context(platform or CodingAgentPlatform(token=TOKEN, **platform_options))
    sock = bind_socket("127.0.0.1", 0)
    callback = f"http://127.0.0.1:{sock.getsockname()[1]}" if webhooks else None
    monitor = make_monitor(agent_config(platform.url, callback))
    if webhooks:
        stack.enter_context(http_server(monitor, sock=sock, poll_code_changes=False))
    else:
        sock.close()
    return World(monitor, platform, clock)


class RendezvousPlatform(CodingAgentPlatform):
    """The reference platform whose first two status requests wait for each other (up to 60 s).

    Two pollers that each hold one status request open at the same moment must be two processes (a pass polls
    its runs one after another): the test so knows both replicas were polling together, without timing."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.barrier = threading.Barrier(2, timeout=60)
        self._waiting = threading.Semaphore(2)

    def before_status(self, run_id: str) -> None:
        if self._waiting.acquire(blocking=False):
            self.barrier.wait()
