"""DNS-rebinding protection for every route: the Host and Origin checks the SDK applies to its MCP routes.

A page on a foreign site whose name resolves to this server (DNS rebinding) sends its own Host; a
browser sends its page's Origin. Both must be on the allowed lists (``check_binding`` in http_app.py:
loopback names on a loopback bind, plus ``http.allowed_hosts`` / ``allowed_origins``), or the answer is
421 (Host) or 403 (Origin), as the SDK answers on /mcp and /sse. Requests without an Origin (CLI, CI,
probes) pass the Origin check; every HTTP/1.1 request has a Host.

A refused request that would change state on an audited surface (a POST to the console) is also handed
to ``on_refusal``, which records it in the audit log: a cross-site form post is an attack worth seeing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

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


# (request path, reason) of a refused state-changing request under an audited prefix.
RefusalRecorder = Callable[[str, str], Awaitable[None]]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class HostOriginGuard:
    """ASGI middleware: refuse a foreign Host (421) or Origin (403) before any route runs."""

    def __init__(
        self,
        app: ASGIApp,
        security: TransportSecuritySettings,
        on_refusal: RefusalRecorder | None = None,
        audited_prefixes: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.hosts = tuple(security.allowed_hosts)
        self.origins = tuple(security.allowed_origins)
        self.on_refusal = on_refusal
        self.audited_prefixes = tuple(audited_prefixes)

    async def _record(self, scope: Scope, reason: str) -> None:
        path = str(scope.get("path", ""))
        if (
            self.on_refusal is not None
            and scope.get("method") not in SAFE_METHODS
            and path.startswith(self.audited_prefixes)
        ):
            await self.on_refusal(path, reason)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if not host or not allowed(host, self.hosts):
            # The refused value is not repeated (nor audited): it may be anything the caller chose.
            await self._record(scope, "request refused: its Host is not served here")
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
            await self._record(scope, "cross-site request refused: its Origin is not allowed")
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
