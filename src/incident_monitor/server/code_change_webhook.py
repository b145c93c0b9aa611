"""The coding-agent platform's way back in: the signed status webhook and the background poller (issue 15).

``POST /incident-monitor/code-changes/{run_id}/webhook`` carries no bearer token: the Standard Webhooks signature
under the run's own secret is its credential (``service.code_change_status.receive_webhook``). It answers within
10 seconds whatever happens (200 even for a run we no longer track; 401 for a bad signature).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from incident_monitor.service import code_change_status
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.replicas import replica_id

logger = logging.getLogger(__name__)

WEBHOOK_PATH = "/incident-monitor/code-changes/{run_id}/webhook"
ANSWER_WITHIN_SECONDS = 9.0
POLLER_TICK_SECONDS = 5.0


def webhook_route(monitor: Monitor) -> Route:
    async def receive(request: Request) -> JSONResponse:
        run_id = request.path_params["run_id"]
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > code_change_status.MAX_WEBHOOK_BYTES:
                return JSONResponse({"error": "body too large"}, status_code=413)
        headers = {k.lower(): v for k, v in request.headers.items()}
        status = 200
        with anyio.move_on_after(ANSWER_WITHIN_SECONDS):
            status = await anyio.to_thread.run_sync(code_change_status.receive_webhook, monitor, run_id, headers, body)
        messages = {200: "ok", 400: "not a status document", 401: "bad signature", 404: "unknown run"}
        return JSONResponse({"result": messages.get(status, "refused")}, status_code=status)

    return Route(WEBHOOK_PATH, receive, methods=["POST"])


@asynccontextmanager
async def poller(
    monitor: Monitor, *, enabled: bool = True, tick_seconds: float = POLLER_TICK_SECONDS
) -> AsyncIterator[None]:
    """Poll active runs while the app serves (when a coding_agent destination is configured): a pass every
    ``tick_seconds`` polls the runs that are due; each run is polled by the one replica holding its poll lease
    (service/code_change_status.py)."""
    if not enabled or not any(d.kind == "coding_agent" for d in monitor.config.destinations):
        yield
        return
    owner = replica_id()

    async def loop() -> None:
        while True:
            try:
                await code_change_status.poll_due(monitor, owner=owner)
            except Exception:  # the poller must outlive one bad pass
                logger.exception("code-change poller pass failed")
            await anyio.sleep(tick_seconds)

    async with anyio.create_task_group() as group:
        group.start_soon(loop)
        try:
            yield
        finally:
            group.cancel_scope.cancel()
