"""``incident-monitor serve --transport stdio``: one local client, the protocol on stdin/stdout."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, cast

import anyio
from mcp.server import MCPServer
from mcp.server.stdio import stdio_server

from incident_monitor.config import Settings
from incident_monitor.errors import ConfigError, CredentialError
from incident_monitor.server.frame_repair import RepairedLines
from incident_monitor.server.principals import stdio_principal
from incident_monitor.server.tools import build_mcp_server
from incident_monitor.service import self_monitoring
from incident_monitor.service.log_sources import announce_sources
from incident_monitor.service.log_tailing import LogSourceRunner
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.publishing import attach_checkpoint_delivery, recover_pending, recovery_loop

if sys.platform != "win32":
    import fcntl

logger = logging.getLogger(__name__)


def serve_stdio(settings: Settings) -> int:
    # stdout carries the protocol: everything human goes to stderr.
    try:
        monitor = attach_checkpoint_delivery(self_monitoring.attach(Monitor.from_settings(settings)))
    except ConfigError as exc:
        print(f"incident-monitor: cannot start: {exc.message}", file=sys.stderr)
        return 2
    try:
        principal = stdio_principal(monitor, settings.token)
    except CredentialError as exc:
        print(f"incident-monitor: cannot start: INCIDENT_MONITOR_TOKEN: {exc.message}", file=sys.stderr)
        return 2
    # Publishes a crashed process left pending (never one another live process is delivering: its lease holds).
    recovered = anyio.run(recover_pending, monitor)
    if recovered:
        print(
            f"incident-monitor: finished {len(recovered)} publish(es) left pending by a crash",
            file=sys.stderr,
        )
    server = build_mcp_server(monitor, principal)
    print(f"incident-monitor: serving stdio as {principal().name}; data in {monitor.data_dir}", file=sys.stderr)
    with LogSourceRunner(monitor):
        announce_sources(monitor)
        anyio.run(_serve, monitor, server)
    monitor.close()  # runs the close hooks: the shutdown audit checkpoint (service/audit_checkpoints.py)
    return 0


@contextmanager
def _claimed_stdin() -> Iterator[BinaryIO]:
    """The protocol's stdin as a private descriptor, fd 0 pointed at the null device meanwhile (as the SDK does
    when it reads stdin itself), so nothing else in the process or its children can take bytes of a frame."""
    if sys.platform == "win32":
        yield sys.stdin.buffer
        return
    private = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    try:
        # closefd=False: a worker thread may still be blocked reading it after the transport exits.
        yield os.fdopen(private, "rb", closefd=False)
    finally:
        os.dup2(private, 0)


async def run_stdio(server: MCPServer) -> None:
    """``MCPServer.run_stdio_async``, reading stdin through the frame repair (server/frame_repair.py)."""
    with _claimed_stdin() as stdin:
        async with stdio_server(stdin=cast(Any, RepairedLines(stdin))) as (read_stream, write_stream):
            lowlevel = server._lowlevel_server
            await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())


async def _serve(monitor: Monitor, server: MCPServer) -> None:
    # Downstream sessions live as long as the server: connected before the first request is read. Recovery
    # goes on while serving: a publish whose claimant dies meanwhile is finished when its lease lapses.
    async with anyio.create_task_group() as background, monitor.downstream.running():
        background.start_soon(recovery_loop, monitor)
        await run_stdio(server)
        background.cancel_scope.cancel()
