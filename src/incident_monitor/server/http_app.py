"""``incident-monitor serve --transport http``: one ASGI app for remote MCP clients, CI and probes.

    /mcp                         Streamable HTTP      (bearer auth, per-tool scopes)
    /sse + /messages/            legacy SSE           (bearer auth, per-tool scopes)
    /incident-monitor/intake/report                   (intake keys only)
    /healthz, /readyz                                 (no auth; nothing secret)
    /console/                    the incident console (operator sign-in; server/console/)
    /.well-known/oauth-protected-resource[/mcp|/sse]  (RFC 9728 metadata)

DNS-rebinding protection (Host/Origin checks) is always on, for every route: loopback names on a loopback
bind, plus ``http.allowed_hosts`` / ``allowed_origins``. A non-loopback bind needs those and auth.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import anyio
import uvicorn
from mcp.server.transport_security import (
    DEFAULT_MAX_REQUEST_BODY_SIZE,
    RequestBodyLimitMiddleware,
    TransportSecuritySettings,
)
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from incident_monitor.domain.enums import Decision
from incident_monitor.errors import ConfigError, StoreUnavailable
from incident_monitor.policy.principal import UNAUTHENTICATED
from incident_monitor.server import code_change_webhook
from incident_monitor.server.auth import (
    INTAKE_PATH,
    BearerAuthenticator,
    RequireBearer,
    principal_resolver,
    protected_resource_metadata,
)
from incident_monitor.server.console.app import PREFIX as CONSOLE_PREFIX
from incident_monitor.server.console.app import console_routes, console_verifier
from incident_monitor.server.frame_repair import FrameRepair
from incident_monitor.server.host_origin import HostOriginGuard
from incident_monitor.server.http_stack import UVICORN_HTTP, UVICORN_LOOP
from incident_monitor.server.intake_endpoint import IntakeEndpoint
from incident_monitor.server.jwt_verifier import JwtVerifier
from incident_monitor.server.rate_limit import RateLimiter
from incident_monitor.server.replicas import check_replica_settings
from incident_monitor.server.tools import build_mcp_server
from incident_monitor.service.governed import record_decision
from incident_monitor.service.log_sources import announce_sources
from incident_monitor.service.log_tailing import LogSourceRunner
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.publishing import recovery_loop
from incident_monitor.service.status import publish_readiness, store_problem

LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
METADATA_PATH = "/.well-known/oauth-protected-resource"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class HttpOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    no_auth: bool = False
    # Added to http.allowed_hosts / allowed_origins from the config.
    allowed_hosts: Sequence[str] = field(default_factory=tuple)
    allowed_origins: Sequence[str] = field(default_factory=tuple)
    # The background code-change poller (off only where a test drives polling by hand with a fake clock).
    poll_code_changes: bool = True


def check_binding(monitor: Monitor, options: HttpOptions) -> TransportSecuritySettings:
    """Refuse unsafe binds with what to configure; return the Host/Origin checks to apply."""
    hosts = [*monitor.config.http.allowed_hosts, *options.allowed_hosts]
    origins = [*monitor.config.http.allowed_origins, *options.allowed_origins]
    if not is_loopback(options.host):
        if options.no_auth:
            raise ConfigError(
                f"--no-auth is allowed only on a loopback address (127.0.0.1, ::1, localhost), not {options.host}; "
                "remove --no-auth and give clients tokens (`incident-monitor tokens create`)"
            )
        if not hosts:
            raise ConfigError(
                f"binding {options.host} needs allowed hosts for DNS-rebinding protection: set http.allowed_hosts "
                '(e.g. ["monitor.example.com", "monitor.example.com:*"]) and http.allowed_origins in the config, '
                "or pass --allowed-host"
            )
    else:
        hosts = [*LOOPBACK_HOSTS, *hosts]
        origins = [*LOOPBACK_ORIGINS, *origins]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def _public_url(monitor: Monitor, options: HttpOptions) -> str:
    if monitor.config.http.public_url:
        return monitor.config.http.public_url.rstrip("/")
    host = f"[{options.host}]" if ":" in options.host else options.host
    return f"http://{host}:{options.port}"


def _metadata_route(path: str, resource: str, authorization_servers: list[str]) -> Route:
    body = protected_resource_metadata(resource, authorization_servers)

    async def metadata(_: Request) -> Response:
        return Response(body, media_type="application/json", headers={"access-control-allow-origin": "*"})

    return Route(path, metadata, methods=["GET"])


def _not_ready(database: str, problem: str) -> Response:
    return JSONResponse({"status": "not_ready", "database": database, "problems": [problem]}, status_code=503)


def _health_routes(monitor: Monitor) -> list[Route]:
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        # Public: whether the monitor can take reports (status, 503 when not) and publish (publish_state,
        # which never fails the probe), not which destination lacks what: that is get_status's, for callers.
        fault = await anyio.to_thread.run_sync(store_problem, monitor)
        if fault is None:
            try:
                with monitor.session() as session:
                    session.connection().execute(text("SELECT 1"))
            except StoreUnavailable as exc:
                return _not_ready(exc.kind, exc.message)
            except Exception:  # any other database failure means not ready too
                return JSONResponse({"status": "not_ready", "database": "unavailable"}, status_code=503)
        else:  # a full disk, a read-only file system, a database out of reach: the fix, not the SQL
            return _not_ready(fault.kind, fault.message)
        publishing = publish_readiness(monitor)
        troubled = [d for d in publishing.reachable if not d.ready or d.consecutive_failures]
        problems = (
            [
                f"{len(troubled)} of {len(publishing.reachable)} destinations that routes publish to are not ready "
                "or failed their latest publish; which, and the fix: get_status (MCP) or `incident-monitor status`"
            ]
            if troubled or publishing.state != "ready"
            else []
        )
        return JSONResponse(
            {
                "status": "ready",
                "database": "ok",
                "destinations_ready": sum(1 for d in publishing.destinations if d.ready),
                "destinations": len(publishing.destinations),
                "publish_ready": publishing.state == "ready",
                "publish_state": publishing.state,
                "problems": problems,
            }
        )

    return [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]


def build_http_app(monitor: Monitor, options: HttpOptions) -> Starlette:
    security = check_binding(monitor, options)
    http = monitor.config.http
    authenticated = not options.no_auth
    authenticator = BearerAuthenticator(monitor, JwtVerifier(http.jwt) if http.jwt else None) if authenticated else None
    limits = http.rate_limits
    check_replica_settings(replicas=http.replicas, stateless=http.stateless, database=monitor.engine.dialect.name)
    # Buckets live in each replica's memory; the balancer spreads callers, so each replica enforces its share.
    share = http.replicas
    principal_limiter = RateLimiter(limits.principal_per_minute / share, max(1, limits.principal_burst // share))
    key_limiter = RateLimiter(limits.intake_key_per_minute / share, max(1, limits.intake_key_burst // share))
    refused_key_limiter = RateLimiter(
        limits.unauthenticated_per_minute / share, max(1, limits.unauthenticated_burst // share)
    )
    server = build_mcp_server(monitor, principal_resolver(authenticated))
    base = _public_url(monitor, options)
    authorization_servers = [http.jwt.issuer] if http.jwt else []

    def guarded(route: BaseRoute, resource_path: str) -> BaseRoute:
        metadata_url = f"{base}{METADATA_PATH}{resource_path}"
        # After the bearer check and the SDK's body-size limit, frames its parser cannot read are repaired
        # so that the scope gate refuses (and audits) them (server/frame_repair.py).
        assert isinstance(route, Mount | Route)
        app = RequestBodyLimitMiddleware(FrameRepair(route.app), DEFAULT_MAX_REQUEST_BODY_SIZE)
        if isinstance(route, Mount):
            return Mount(route.path, app=RequireBearer(app, authenticator, principal_limiter, metadata_url))
        guard = RequireBearer(app, authenticator, principal_limiter, metadata_url)
        return Route(route.path, guard, methods=sorted(route.methods or ()) or None)

    streamable = server.streamable_http_app(
        streamable_http_path="/mcp", transport_security=security, stateless_http=http.stateless
    )
    sse = server.sse_app(sse_path="/sse", message_path="/messages/", transport_security=security)
    intake = IntakeEndpoint(monitor, key_limiter, refused_key_limiter)
    routes: list[BaseRoute] = [
        *_health_routes(monitor),
        Route(INTAKE_PATH, intake.handle, methods=["POST"]),
        _metadata_route(METADATA_PATH, base, authorization_servers),
        _metadata_route(f"{METADATA_PATH}/mcp", f"{base}/mcp", authorization_servers),
        _metadata_route(f"{METADATA_PATH}/sse", f"{base}/sse", authorization_servers),
        *(guarded(r, "/mcp") for r in streamable.routes),
        *(guarded(r, "/sse") for r in sse.routes),
        *console_routes(monitor, console_verifier(authenticator), http.public_url),
        code_change_webhook.webhook_route(monitor),
    ]

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # Every replica finishes pending publishes whose claimant died (service/publishing.py), from start-up on.
        async with anyio.create_task_group() as background:
            background.start_soon(recovery_loop, monitor)
            async with (
                monitor.downstream.running(),
                server.session_manager.run(),
                code_change_webhook.poller(monitor, enabled=options.poll_code_changes),
            ):
                with LogSourceRunner(monitor):
                    announce_sources(monitor)
                    yield
            intake.close()  # its worker threads, before the monitor closes
            background.cancel_scope.cancel()

    async def audit_refusal(path: str, reason: str) -> None:
        # A cross-site POST to the console never reaches it: recorded here, as the console records its own.
        await anyio.to_thread.run_sync(
            partial(
                record_decision, monitor, UNAUTHENTICATED, "console_request", Decision.deny, [reason], {"path": path}
            )
        )

    # The SDK checks Host/Origin on its own routes; this guard covers intake, health, metadata and the console too.
    guard = Middleware(HostOriginGuard, security=security, on_refusal=audit_refusal, audited_prefixes=(CONSOLE_PREFIX,))
    return Starlette(routes=routes, lifespan=lifespan, middleware=[guard])


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind (and listen) before serving, so ``--port 0`` can print the port the OS chose."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose proto says TCP.
    # Without it every response waits for the client's delayed ACK (Nagle): ~40 ms per request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # Listening now means clients told the URL can connect at once (they queue until uvicorn accepts).
    sock.listen(2048)
    return sock


def serve_http(monitor: Monitor, options: HttpOptions, announce: Callable[[str], None] | None = None) -> int:
    """Bind, build the app, tell the operator (and ``announce``) the base URL, then serve until stopped."""
    try:
        sock = bind_socket(options.host, options.port)
    except OSError as exc:
        print(f"incident-monitor: cannot listen on {options.host}:{options.port}: {exc.strerror}", file=sys.stderr)
        return 2
    options = HttpOptions(
        host=options.host,
        port=sock.getsockname()[1],
        no_auth=options.no_auth,
        allowed_hosts=options.allowed_hosts,
        allowed_origins=options.allowed_origins,
    )
    try:
        app = build_http_app(monitor, options)
    except ConfigError as exc:
        sock.close()
        print(f"incident-monitor: cannot start: {exc.message}", file=sys.stderr)
        return 2
    base = _public_url(monitor, options)
    who = "auth OFF: every caller is local-agent" if options.no_auth else "bearer tokens required"
    print(
        f"incident-monitor: serving {base}/mcp (Streamable HTTP) and {base}/sse (SSE); {who}; "
        f"data in {monitor.data_dir}",
        file=sys.stderr,
        flush=True,
    )
    if announce is not None:
        announce(base)
    # log_config=None, log_level=None: uvicorn keeps to the handlers and levels logging_setup configured.
    config = uvicorn.Config(app, log_config=None, log_level=None, lifespan="on", http=UVICORN_HTTP, loop=UVICORN_LOOP)
    uvicorn.Server(config).run(sockets=[sock])
    monitor.close()  # runs the close hooks: the shutdown audit checkpoint (service/audit_checkpoints.py)
    return 0
