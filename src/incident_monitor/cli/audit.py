"""``audit list`` and ``audit verify``: the hash-chained decision log."""

from __future__ import annotations

import argparse
from typing import Any

from incident_monitor.cli.common import EXIT_FAILED, EXIT_OK, add_command, add_group, json_or, open_monitor, print_json
from incident_monitor.cli.table import print_table
from incident_monitor.policy.principal import local_operator
from incident_monitor.service import audit_queries


def cmd_audit_verify(args: argparse.Namespace) -> int:
    result = audit_queries.verify_audit(open_monitor(args), local_operator())
    if args.json:
        print_json(result)
    elif result.ok:
        print(f"audit chain intact: {result.events_checked} events, head {result.head_hash or '(empty)'}")
    else:
        print(
            f"audit chain BROKEN at event {result.first_broken_seq}: {result.problem} "
            f"({result.events_checked} events verified before it)"
        )
    return EXIT_OK if result.ok else EXIT_FAILED


def cmd_audit_list(args: argparse.Namespace) -> int:
    events = audit_queries.list_audit_events(
        open_monitor(args), local_operator(), limit=args.limit, subject_id=args.subject
    )
    return json_or(
        args,
        events,
        lambda: print_table(
            ["#", "AT", "PRINCIPAL", "ACTION", "DECISION", "SUBJECT", "REASONS"],
            [[e.seq, e.at, e.principal, e.action, e.decision, e.subject_id, "; ".join(e.reasons)] for e in events],
            empty="no audit events",
        ),
    )


def register(sub: Any) -> None:
    audit = add_group(sub, "audit", help="the audit log of every decision", examples=["incident-monitor audit verify"])
    add_command(
        audit,
        "verify",
        cmd_audit_verify,
        help="check the audit log's hash chain (exit 1 when broken)",
        examples=["incident-monitor audit verify"],
    )
    alog = add_command(
        audit,
        "list",
        cmd_audit_list,
        help="the newest audit events, oldest first",
        examples=[
            "incident-monitor audit list --limit 20",
            "incident-monitor audit list --subject apr_0123456789abcdef",
        ],
    )
    alog.add_argument("--limit", type=int, default=30)
    alog.add_argument("--subject", default=None, help="only events about this incident/draft/approval id")
