"""The floors the governed server is measured against, served by the same libraries it uses.

python -m benchmarks.floors noop-stdio          an MCPServer with one no-op tool, on stdio
python -m benchmarks.floors noop-http PORT      the same server, Streamable HTTP on 127.0.0.1:PORT (uvicorn)
python -m benchmarks.floors bare-intake PORT    a bare Starlette endpoint that parses the intake JSON
python -m benchmarks.floors static-page PORT BYTES   a bare Starlette app serving one fixed HTML page of BYTES
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import uvicorn
from mcp.server import MCPServer
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from incident_monitor.server.http_stack import UVICORN_HTTP, UVICORN_LOOP


class NoopResult(BaseModel):
    ok: bool


def noop_server() -> MCPServer:
    server = MCPServer(name="noop")

    # The same argument shape as report_incident, so argument parsing is part of the floor too.
    def noop(title: str, source: str, event: str, detail: str = "", fingerprint: str | None = None) -> NoopResult:
        return NoopResult(ok=True)

    server.add_tool(noop, name="noop", structured_output=True)
    return server


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


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING)
    kind = argv[0]
    if kind == "noop-stdio":
        noop_server().run()
    elif kind == "noop-http":
        # The governed server's settings: uvicorn on the same stack, at warning level, no per-request logging.
        uvicorn.run(
            noop_server().streamable_http_app(),
            host="127.0.0.1",
            port=int(argv[1]),
            log_level="warning",
            http=UVICORN_HTTP,
            loop=UVICORN_LOOP,
        )
    elif kind == "bare-intake":
        app = Starlette(routes=[Route("/incident-monitor/intake/report", bare_intake, methods=["POST"])])
        uvicorn.run(app, host="127.0.0.1", port=int(argv[1]), log_level="warning", http=UVICORN_HTTP, loop=UVICORN_LOOP)
    elif kind == "static-page":
        body = static_page(int(argv[2]))

        async def page(_: Request) -> Response:
            return HTMLResponse(body)

        app = Starlette(routes=[Route("/page.html", page, methods=["GET"])])
        uvicorn.run(app, host="127.0.0.1", port=int(argv[1]), log_level="warning", http=UVICORN_HTTP, loop=UVICORN_LOOP)
    else:
        print(f"unknown floor {kind!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
