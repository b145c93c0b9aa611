"""``incident-monitor sources list | status ID | reset-offset ID | replay-latest ID [--lines N]``.

Argparse wiring only: each command calls one service function (service/log_sources.py) as the local
operator, so the checks and the audit log are the MCP tools'. Kept in its own module, with its own
``--config``/``--data-dir`` options, so it plugs into whichever CLI layout calls
``add_sources_commands(subparsers)``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from incident_monitor.config import Settings
from incident_monitor.policy.principal import local_operator
from incident_monitor.service import log_sources, self_monitoring
from incident_monitor.service.monitor import Monitor


def _open(args: argparse.Namespace) -> Monitor:
    overrides: dict[str, Any] = {}
    if args.config is not None:
        overrides["config"] = args.config
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    return self_monitoring.attach(Monitor.from_settings(Settings(**overrides)))


def _print_json(value: BaseModel | list[Any]) -> None:
    data = [v.model_dump(mode="json") for v in value] if isinstance(value, list) else value.model_dump(mode="json")
    print(json.dumps(data, indent=2))


def _line(status: log_sources.SourceStatus) -> str:
    state = "ready" if status.ready else f"NOT READY: {status.problem}"
    return (
        f"{status.id:20} project={status.project_id} source={status.source_id} path={status.path} "
        f"reports={status.reports} repeats={status.repeats} {state}"
    )


def cmd_sources_list(args: argparse.Namespace) -> int:
    statuses = log_sources.source_statuses(_open(args), local_operator())
    if args.json:
        _print_json(statuses)
        return 0
    if not statuses:
        print('no log sources configured ([[sources]] with kind = "log_file")')
    for status in statuses:
        print(_line(status))
    return 0


def cmd_sources_status(args: argparse.Namespace) -> int:
    status = log_sources.source_status(_open(args), local_operator(), args.source)
    if args.json:
        _print_json(status)
        return 0
    print(_line(status))
    print(
        f"  lease: {status.lease_owner or '-'} until {status.lease_expires_at or '-'}; "
        f"last poll {status.last_polled_at or '-'}"
    )
    print(
        f"  rejected={status.rejected} undecodable_bytes={status.undecodable_bytes} warnings={status.warnings}"
        + (f"; last problem: {status.last_problem}" if status.last_problem else "")
    )
    for f in status.files:
        print(f"  {f.path}: offset {f.offset} of {f.size} bytes (device {f.device}, inode {f.inode})")
    return 0


def cmd_sources_reset(args: argparse.Namespace) -> int:
    status = log_sources.reset_source_offset(_open(args), local_operator(), args.source, to=args.to)
    if args.json:
        _print_json(status)
        return 0
    print(f"source {status.id}: {len(status.files)} file offset(s) moved to the {args.to} (audited)")
    return 0


def cmd_sources_replay(args: argparse.Namespace) -> int:
    result = log_sources.replay_latest(_open(args), local_operator(), args.source, lines=args.lines)
    if args.json:
        _print_json(result)
        return 0
    print(
        f"source {result.id}: replayed {result.lines} line(s): {result.events} event(s), {result.reports} report(s), "
        f"{result.rejected} refused; incidents: {', '.join(result.incident_ids) or '-'}"
    )
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="config TOML (env INCIDENT_MONITOR_CONFIG)")
    parser.add_argument("--data-dir", type=Path, default=None, help="data directory (env INCIDENT_MONITOR_DATA_DIR)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def add_sources_commands(subparsers: Any) -> None:
    """Add ``sources`` and its commands to an argparse subparsers object."""
    sources = subparsers.add_parser("sources", help="log sources tailed into reports").add_subparsers(
        dest="sources_command", required=True
    )
    listing = sources.add_parser("list", help="every log source: binding, readiness, counters")
    _common(listing)
    listing.set_defaults(func=cmd_sources_list)
    status = sources.add_parser("status", help="one source: lease, offsets per file, counters, last problem")
    status.add_argument("source", help="the [[sources]] id")
    _common(status)
    status.set_defaults(func=cmd_sources_status)
    reset = sources.add_parser("reset-offset", help="move a source's offsets to its files' start (or end); audited")
    reset.add_argument("source", help="the [[sources]] id")
    reset.add_argument("--to", choices=("start", "end"), default="start", help="start: read again (default)")
    _common(reset)
    reset.set_defaults(func=cmd_sources_reset)
    replay = sources.add_parser("replay-latest", help="report a source's last lines again (offsets unchanged)")
    replay.add_argument("source", help="the [[sources]] id")
    replay.add_argument("--lines", type=int, default=100, help="how many of the last lines (default 100)")
    _common(replay)
    replay.set_defaults(func=cmd_sources_replay)
