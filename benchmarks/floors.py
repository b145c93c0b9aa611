"""The floors the governed server is measured against, served by the same libraries it uses.

python -m benchmarks.floors noop-stdio          an MCPServer with one no-op tool, on stdio
python -m benchmarks.floors noop-http PORT      the same server, Streamable HTTP on 127.0.0.1:PORT (uvicorn)
python -m benchmarks.floors bare-intake PORT    a bare Starlette endpoint that parses the intake JSON
python -m benchmarks.floors static-page PORT BYTES   a bare Starlette app serving one fixed HTML page of BYTES

The durable floors: the same, plus the one durable write a governed call cannot do without. DB is a
SQLite file path (WAL, synchronous=FULL, BEGIN IMMEDIATE: the store's own settings) or a database URL.

python -m benchmarks.floors durable-stdio DB            the no-op tool, durably inserting its arguments, on stdio
python -m benchmarks.floors durable-http PORT DB        the same, Streamable HTTP on 127.0.0.1:PORT
python -m benchmarks.floors durable-intake PORT DB      the bare endpoint, durably inserting the body
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING, Any

import anyio
import uvicorn
from mcp.server import MCPServer
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from incident_monitor.server.http_stack import UVICORN_HTTP, UVICORN_LOOP

if TYPE_CHECKING:
    # Imported where a durable floor starts: the no-op floors must not pay for SQLAlchemy and the store's
    # models (~250 ms of a cold start) that a no-op server never uses.
    from benchmarks.durable_log import DurableLog


class NoopResult(BaseModel):
    ok: bool


def noop_server() -> MCPServer:
    server = MCPServer(name="noop")

    # The same argument shape as report_incident, so argument parsing is part of the floor too.
    def noop(title: str, source: str, event: str, detail: str = "", fingerprint: str | None = None) -> NoopResult:
        return NoopResult(ok=True)

    server.add_tool(noop, name="noop", structured_output=True)
    return server


def durable_server(log: DurableLog) -> MCPServer:
    """The no-op tool plus one durable insert of its arguments, in a worker thread (as the governed tools
    run their service calls: server/tools.py ``in_worker``), through the store's group commit."""
    server = MCPServer(name="noop-durable")

    async def noop(title: str, source: str, event: str, detail: str = "", fingerprint: str | None = None) -> NoopResult:
        arguments = {"title": title, "source": source, "event": event, "detail": detail, "fingerprint": fingerprint}
        await anyio.to_thread.run_sync(log.insert, json.dumps(arguments))
        return NoopResult(ok=True)

    server.add_tool(noop, name="noop", structured_output=True)
    return server


def durable_intake(log: DurableLog) -> Starlette:
    """The bare endpoint plus one durable insert of the body, parsed and stored in one worker thread."""

    def store(body: bytes) -> Response:
        payload: Any = json.loads(body)
        if not isinstance(payload, dict):
            return JSONResponse({"error": "body_invalid"}, status_code=400)
        log.insert(body.decode())
        return JSONResponse({"ok": True, "fingerprint": payload.get("report", {}).get("fingerprint")}, status_code=201)

    async def endpoint(request: Request) -> Response:
        return await anyio.to_thread.run_sync(store, await request.body())

    return Starlette(routes=[Route("/incident-monitor/intake/report", endpoint, methods=["POST"])])


def serve_http(app: Any, port: int) -> None:
    # The governed server's settings: uvicorn on the same stack, at warning level, no per-request logging.
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", http=UVICORN_HTTP, loop=UVICORN_LOOP)


async def bare_intake(request: Request) -> Response:
    payload: Any = json.loads(await request.body())
    if not isinstance(payload, dict):
        return JSONResponse({"error": "body_invalid"}, status_code=400)
    return JSONResponse({"ok": True, "fingerprint": payload.get("report", {}).get("fingerprint")}, status_code=201)


def static_page(size: int) -> str:
    """A fixed HTML page of about ``size`` bytes (table rows, like the console's list)."""
    row = "<tr><td>high</td><td>Seeded failure</td><td>open</td><td>ci</td><td>2026-01-01 00:00:00 UTC</td></tr>\n"
    rows = row * max(1, (size - 200) // len(row))
    return f"<!doctype html><html><head><title>static</title></head><body><table>{rows}</table></body></html>"


def serve_durable(kind: str, argv: list[str]) -> int:
    from benchmarks.durable_log import DurableLog  # here, not at the top: see the TYPE_CHECKING import

    if kind == "durable-stdio":
        with DurableLog.open(argv[0]) as log:
            durable_server(log).run()
    elif kind == "durable-http":
        with DurableLog.open(argv[1]) as log:
            serve_http(durable_server(log).streamable_http_app(), int(argv[0]))
    elif kind == "durable-intake":
        with DurableLog.open(argv[1]) as log:
            serve_http(durable_intake(log), int(argv[0]))
    else:
        return unknown_floor(kind)
    return 0


def unknown_floor(kind: str) -> int:
    print(f"unknown floor {kind!r}", file=sys.stderr)
    return 2


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING)
    kind = argv[0]
    if kind == "noop-stdio":
        noop_server().run()
    elif kind == "noop-http":
        serve_http(noop_server().streamable_http_app(), int(argv[1]))
    elif kind == "bare-intake":
        serve_http(
            Starlette(routes=[Route("/incident-monitor/intake/report", bare_intake, methods=["POST"])]), int(argv[1])
        )
    elif kind.startswith("durable-"):
        return serve_durable(kind, argv[1:])
    elif kind == "static-page":
        body = static_page(int(argv[2]))

        async def page(_: Request) -> Response:
            return HTMLResponse(body)

        serve_http(Starlette(routes=[Route("/page.html", page, methods=["GET"])]), int(argv[1]))
    else:
        return unknown_floor(kind)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
