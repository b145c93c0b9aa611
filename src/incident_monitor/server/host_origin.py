"""DNS-rebinding protection for every route: the Host and Origin checks the SDK applies to its MCP routes.

A page on a foreign site whose name resolves to this server (DNS rebinding) sends its own Host; a
browser sends its page's Origin. Both must be on the allowed lists (``check_binding`` in http_app.py:
loopback names on a loopback bind, plus ``http.allowed_hosts`` / ``allowed_origins``), or the answer is
421 (Host) or 403 (Origin), as the SDK answers on /mcp and /sse. Requests without an Origin (CLI, CI,
probes) pass the Origin check; every HTTP/1.1 request has a Host.
"""

from __future__ import annotations

from collections.abc import Sequence

from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Receive, Scope, Send

from incident_monitor.server.asgi_json import send_json


def allowed(value: str, patterns: Sequence[str]) -> bool:
    """``value`` equals a pattern, or matches ``base:*`` with any port (the SDK's rule)."""
    return any(value == p or (p.endswith(":*") and value.startswith(p[:-1])) for p in patterns)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class HostOriginGuard:
    """ASGI middleware: refuse a foreign Host (421) or Origin (403) before any route runs."""

    def __init__(self, app: ASGIApp, security: TransportSecuritySettings) -> None:
        self.app = app
        self.hosts = tuple(security.allowed_hosts)
        self.origins = tuple(security.allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if not host or not allowed(host, self.hosts):
            # The refused value is not repeated: it may be anything the caller chose.
            await send_json(
                send,
                421,
                {
                    "error": "host_not_allowed",
                    "error_description": "this Host is not served here; add it to http.allowed_hosts "
                    "(or --allowed-host) if it names this server",
                },
            )
            return
        origin = _header(scope, b"origin")
        if origin and not allowed(origin, self.origins):
            await send_json(
                send,
                403,
                {
                    "error": "origin_not_allowed",
                    "error_description": "requests from this Origin are refused; add it to http.allowed_origins "
                    "if it is a trusted client",
                },
            )
            return
        await self.app(scope, receive, send)
