"""The HTTP server on a real socket (127.0.0.1, a free port) and MCP clients that connect to it."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Literal

import httpx2
import uvicorn
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from incident_monitor.server.http_app import HttpOptions, bind_socket, build_http_app
from incident_monitor.service.monitor import Monitor

Transport = Literal["streamable-http", "sse"]


@contextmanager
def http_server(
    monitor: Monitor, *, no_auth: bool = False, sock: socket.socket | None = None, poll_code_changes: bool = True
) -> Iterator[str]:
    """Serve ``monitor`` with uvicorn in a thread; yields the base URL (http://127.0.0.1:PORT).

    ``sock``: a socket bound beforehand, when the config must name the port (a callback URL);
    ``poll_code_changes=False``: no background poller (the test polls by hand, on its fake clock)."""
    sock = sock or bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    options = HttpOptions(host="127.0.0.1", port=port, no_auth=no_auth, poll_code_changes=poll_code_changes)
    app = build_http_app(monitor, options)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # surfaced to the test below
            failure.append(exc)

    thread = threading.Thread(target=run, name="incident-monitor-http", daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started or failure or not thread.is_alive():
                break
            threading.Event().wait(0.02)
        assert server.started, f"HTTP server did not start: {failure}"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@asynccontextmanager
async def http_client(
    base_url: str, token: str | None, transport: Transport = "streamable-http"
) -> AsyncIterator[Client]:
    """A real MCP client over Streamable HTTP or SSE, presenting ``token`` as a bearer token."""
    if transport == "sse":
        async with Client(sse_client(f"{base_url}/sse", headers=bearer(token))) as client:
            yield client
        return
    async with (
        httpx2.AsyncClient(headers=bearer(token), timeout=30) as http,
        Client(streamable_http_client(f"{base_url}/mcp", http_client=http)) as client,
    ):
        yield client
