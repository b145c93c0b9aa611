"""``sources list | status ID | reset-offset ID | replay-latest ID [--lines N]``: the tailed log files.

Each command is one service call (service/log_sources.py) as the local operator: reading is the read
scope, resetting offsets and replaying lines are audited admin actions.
"""

from __future__ import annotations

import argparse
from typing import Any

from incident_monitor.cli.common import add_command, add_group, json_or, open_monitor
from incident_monitor.cli.table import print_table
from incident_monitor.policy.principal import local_operator
from incident_monitor.service import log_sources


def _state(status: log_sources.SourceStatus) -> str:
    return "ready" if status.ready else f"NOT READY: {status.problem}"


def cmd_sources_list(args: argparse.Namespace) -> int:
    statuses = log_sources.source_statuses(open_monitor(args), local_operator())
    return json_or(
        args,
        statuses,
        lambda: print_table(
            ["ID", "PROJECT", "SOURCE", "PATH", "REPORTS", "REPEATS", "STATE"],
            [[s.log_source_id, s.project_id, s.source_id, s.path, s.reports, s.repeats, _state(s)] for s in statuses],
            empty='no log sources configured ([[sources]] with kind = "log_file")',
        ),
    )


def _print_status(status: log_sources.SourceStatus) -> None:
    print(
        f"{status.log_source_id}: project={status.project_id} source={status.source_id} path={status.path} "
        f"reports={status.reports} repeats={status.repeats} {_state(status)}"
    )
    print(f"  lease: {status.lease_owner or '-'} until {status.lease_expires_at or '-'}")
    print(
        f"  last poll: {status.last_polled_at or '-'}"
        + (f"; last problem: {status.last_problem}" if status.last_problem else "")
    )
    print(f"  rejected={status.rejected} undecodable_bytes={status.undecodable_bytes} warnings={status.warnings}")
    for f in status.files:
        print(f"  {f.path}: offset {f.offset} of {f.size} bytes (device {f.device}, inode {f.inode})")


def cmd_sources_status(args: argparse.Namespace) -> int:
    status = log_sources.source_status(open_monitor(args), local_operator(), args.source)
    return json_or(args, status, lambda: _print_status(status))


def cmd_sources_reset(args: argparse.Namespace) -> int:
    status = log_sources.reset_source_offset(open_monitor(args), local_operator(), args.source, to=args.to)
    return json_or(
        args,
        status,
        lambda: print(
            f"source {status.log_source_id}: {len(status.files)} file offset(s) moved to the {args.to} (audited)"
        ),
    )


def cmd_sources_replay(args: argparse.Namespace) -> int:
    result = log_sources.replay_latest(open_monitor(args), local_operator(), args.source, lines=args.lines)
    return json_or(
        args,
        result,
        lambda: print(
            f"source {result.log_source_id}: replayed {result.lines} line(s): {result.events} event(s), "
            f"{result.reports} report(s), {result.rejected} refused; incidents: {', '.join(result.incident_ids) or '-'}"
        ),
    )


def register(sub: Any) -> None:
    sources = add_group(
        sub,
        "sources",
        help="log files tailed into reports inside the workspace root",
        examples=["incident-monitor sources list", "incident-monitor sources status ci-build"],
    )
    add_command(
        sources,
        "list",
        cmd_sources_list,
        help="every log source: binding, readiness, counters",
        examples=["incident-monitor sources list"],
    )
    status = add_command(
        sources,
        "status",
        cmd_sources_status,
        help="one source: lease, offsets per file, counters, last problem",
        examples=["incident-monitor sources status ci-build"],
    )
    status.add_argument("source", help="the [[sources]] id")
    reset = add_command(
        sources,
        "reset-offset",
        cmd_sources_reset,
        help="move a source's offsets to its files' start (read again) or end; an audited admin action",
        examples=[
            "incident-monitor sources reset-offset ci-build",
            "incident-monitor sources reset-offset ci-build --to end",
        ],
    )
    reset.add_argument("source", help="the [[sources]] id")
    reset.add_argument("--to", choices=("start", "end"), default="start", help="start: read again (default)")
    replay = add_command(
        sources,
        "replay-latest",
        cmd_sources_replay,
        help="report a source's last lines again through intake (offsets unchanged); an audited admin action",
        examples=["incident-monitor sources replay-latest ci-build --lines 50"],
    )
    replay.add_argument("source", help="the [[sources]] id")
    replay.add_argument("--lines", type=int, default=100, help="how many of the last lines (default 100)")
