"""``status`` (readiness of the monitor and its destinations) and ``destinations enable``."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from incident_monitor.cli.common import EXIT_FAILED, EXIT_OK, add_command, add_group, json_or, open_monitor, print_json
from incident_monitor.cli.table import print_table
from incident_monitor.policy.principal import local_operator
from incident_monitor.service import destination_calls, destination_health, status


def cmd_status(args: argparse.Namespace) -> int:
    view = status.get_status(open_monitor(args), local_operator())
    if args.json:
        print_json(view)
        return EXIT_OK
    r = view.readiness
    print(f"incident-monitor {view.version}  policy {view.policy_version}")
    print(
        f"config_valid={r.config_valid} ingest_ready={r.ingest_ready} "
        f"route_preview_ready={r.route_preview_ready} publish_ready={r.publish_ready}"
    )
    for d in view.destinations:
        print(
            f"  destination {d.destination_id} ({d.kind}): {'ready' if d.ready else 'NOT READY'}"
            + (f" — {'; '.join(d.reasons)}" if d.reasons else "")
        )
    print(f"open incidents: {view.open_incidents}  pending approvals: {view.pending_approvals}")
    for p in view.problems:
        print(f"  problem: {p}")
    return EXIT_OK


def cmd_destinations_enable(args: argparse.Namespace) -> int:
    changed = destination_health.enable_destination(open_monitor(args), local_operator(), args.destination_id)
    print(f"destination {args.destination_id} " + ("re-enabled" if changed else "was not disabled"))
    return EXIT_OK


def cmd_destinations_ping(args: argparse.Namespace) -> int:
    result = asyncio.run(destination_calls.ping_destination(open_monitor(args), local_operator(), args.destination_id))
    print(f"destination {result.destination_id}: " + ("ok — " if result.ok else "FAILED — ") + result.detail)
    return EXIT_OK if result.ok else EXIT_FAILED


def cmd_destinations_list(args: argparse.Namespace) -> int:
    destinations = status.get_status(open_monitor(args), local_operator()).destinations
    return json_or(
        args,
        list(destinations),
        lambda: print_table(
            ["DESTINATION", "KIND", "READY", "REASONS"],
            [
                [d.destination_id, d.kind, "ready" if d.ready else "NOT READY", "; ".join(d.reasons)]
                for d in destinations
            ],
            empty="no destinations configured; add [[destinations]] to the config",
        ),
    )


def register(sub: Any) -> None:
    add_command(
        sub,
        "status",
        cmd_status,
        help="readiness of the monitor and its destinations",
        examples=["incident-monitor status", "incident-monitor status --json"],
    )
    dst = add_group(
        sub,
        "destinations",
        help="destination state",
        examples=["incident-monitor destinations list", "incident-monitor destinations enable ops-webhook"],
    )
    add_command(
        dst,
        "list",
        cmd_destinations_list,
        help="configured destinations and whether each is ready",
        examples=["incident-monitor destinations list"],
    )
    enable = add_command(
        dst,
        "enable",
        cmd_destinations_enable,
        help="re-enable a destination its receiver disabled (HTTP 410)",
        examples=["incident-monitor destinations enable ops-webhook"],
        json_flag=False,
    )
    enable.add_argument("destination_id")
    ping = add_command(
        dst,
        "ping",
        cmd_destinations_ping,
        help="test the connection to a coding_agent destination (GET /ping) and say what failed",
        examples=["incident-monitor destinations ping coding-agent"],
        json_flag=False,
    )
    ping.add_argument("destination_id")
