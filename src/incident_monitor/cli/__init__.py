"""The ``incident-monitor`` command: set-up, serving, and the operator's view of what agents do.

Operator commands act as the local operator (``operator:<user>``) through the same service functions,
policy checks and audit log as the MCP tools. One module per concern; this one assembles the parser.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from incident_monitor import __version__
from incident_monitor.cli import audit, credentials, db, evidence, governance, init, operator, serve, sources, status
from incident_monitor.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, GLOBAL_OPTIONS, Command
from incident_monitor.errors import MonitorError
from incident_monitor.logging_setup import configure_logging

EXAMPLES = """\
first run (writes a config, data directory and secrets; prints how to connect Claude Code, Cursor, HTTP):
  incident-monitor init

then, as the operator:
  incident-monitor status
  incident-monitor approvals list
  incident-monitor drafts show drf_0123456789abcdef
  incident-monitor approvals approve apr_0123456789abcdef --note "Evidence checked; page on-call."
  incident-monitor receipts list

config and data are found the same way by every command: --config / --data-dir (before or after the
command), else INCIDENT_MONITOR_CONFIG / INCIDENT_MONITOR_DATA_DIR, else what `incident-monitor init` wrote.
`incident-monitor COMMAND --help` shows each command's options and an example.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="incident-monitor",
        description="Governed incident evidence over MCP: agents report and ask; policy and an operator decide.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[GLOBAL_OPTIONS],
    )
    parser.add_argument("--version", action="version", version=f"incident-monitor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (init, serve, status, operator, credentials, audit, evidence, governance, sources, db):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    default_level = "INFO" if args.command == "serve" else "WARNING"
    configure_logging(getattr(args, "log_level", default_level), getattr(args, "log_format", "text"))
    func: Command = args.func
    args.opened = []
    try:
        return func(args)
    except MonitorError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE if exc.code in ("config_error", "invalid_input", "credential_error") else EXIT_FAILED
    finally:
        for monitor in args.opened:
            monitor.close()


if __name__ == "__main__":
    sys.exit(main())
