"""``incident-monitor serve``: the MCP server over stdio (one local client) or Streamable HTTP."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from incident_monitor.cli.common import EXIT_USAGE, add_command, locate, use_audit_key_file
from incident_monitor.config import Settings
from incident_monitor.errors import ConfigError


def cmd_serve(args: argparse.Namespace) -> int:
    use_audit_key_file(args)
    try:
        found = locate(args)
    except ConfigError as exc:
        print(f"incident-monitor: cannot start: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    if args.transport == "http":
        return _serve_http(args, found)
    from incident_monitor.server.stdio import serve_stdio

    return serve_stdio(Settings(config=found.config, data_dir=found.data_dir, migrate=_migrate(args)))


def _migrate(args: argparse.Namespace) -> bool:
    """Upgrade an outdated schema at start unless --no-migrate (or INCIDENT_MONITOR_MIGRATE=false) says refuse."""
    return not args.no_migrate and Settings().migrate


def _serve_http(args: argparse.Namespace, found: Any) -> int:
    from incident_monitor.server.http_app import HttpOptions, serve_http
    from incident_monitor.service import self_monitoring
    from incident_monitor.service.monitor import Monitor
    from incident_monitor.service.publishing import attach_checkpoint_delivery

    try:
        monitor = attach_checkpoint_delivery(self_monitoring.attach(Monitor.at(found, migrate=_migrate(args))))
    except ConfigError as exc:
        print(f"incident-monitor: cannot start: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    options = HttpOptions(
        host=args.host,
        port=args.port,
        no_auth=args.no_auth,
        allowed_hosts=tuple(args.allowed_host),
        allowed_origins=tuple(args.allowed_origin),
    )
    return serve_http(monitor, options)


def register(sub: Any) -> None:
    serve = add_command(
        sub,
        "serve",
        cmd_serve,
        help="run the MCP server (stdio for one local client, http for remote clients and CI intake)",
        examples=[
            "incident-monitor serve --transport stdio",
            "incident-monitor serve --transport http --port 8000 --log-format json",
        ],
        json_flag=False,
    )
    serve.add_argument(
        "--transport",
        choices=["stdio", "http"],
        default="stdio",
        help="stdio (one local client) or http (Streamable HTTP at /mcp, SSE at /sse, the intake endpoint)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="http: address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="http: port (default 8000; 0 picks a free one)")
    serve.add_argument(
        "--no-auth",
        action="store_true",
        help="http, loopback only: no bearer tokens; every caller is the local agent, as on stdio",
    )
    serve.add_argument("--allowed-host", action="append", default=[], help="http: Host header to accept (repeatable)")
    serve.add_argument(
        "--allowed-origin", action="append", default=[], help="http: Origin header to accept (repeatable)"
    )
    serve.add_argument(
        "--no-migrate",
        action="store_true",
        help="refuse to serve a database whose schema is outdated (default: upgrade it first, under a lock)",
    )
