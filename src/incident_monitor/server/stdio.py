"""``incident-monitor serve --transport stdio``: one local client, the protocol on stdin/stdout."""

from __future__ import annotations

import logging
import sys

import anyio

from incident_monitor.config import Settings
from incident_monitor.errors import ConfigError, CredentialError
from incident_monitor.server.principals import stdio_principal
from incident_monitor.server.tools import build_mcp_server
from incident_monitor.service import self_monitoring
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.publishing import recover_pending

logger = logging.getLogger(__name__)


def serve_stdio(settings: Settings) -> int:
    # stdout carries the protocol: everything human goes to stderr.
    try:
        monitor = self_monitoring.attach(Monitor.from_settings(settings))
    except ConfigError as exc:
        print(f"incident-monitor: cannot start: {exc.message}", file=sys.stderr)
        return 2
    try:
        principal = stdio_principal(monitor, settings.token)
    except CredentialError as exc:
        print(f"incident-monitor: cannot start: INCIDENT_MONITOR_TOKEN: {exc.message}", file=sys.stderr)
        return 2
    recovered = anyio.run(recover_pending, monitor)
    if recovered:
        print(
            f"incident-monitor: finished {len(recovered)} publish(es) left pending by a crash",
            file=sys.stderr,
        )
    server = build_mcp_server(monitor, principal)
    print(f"incident-monitor: serving stdio as {principal().name}; data in {monitor.data_dir}", file=sys.stderr)
    server.run()
    return 0
