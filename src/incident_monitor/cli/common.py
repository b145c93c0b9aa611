"""What every command shares: the global options, how a command is declared, and opening the monitor."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from incident_monitor.locations import Locations, find_locations
from incident_monitor.logging_setup import LOG_FORMATS, LOG_LEVELS
from incident_monitor.service import self_monitoring
from incident_monitor.service.monitor import Monitor

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

Command = Callable[[argparse.Namespace], int]


def _global_options() -> argparse.ArgumentParser:
    # SUPPRESS defaults: a subcommand's parser must not overwrite a value given before the subcommand.
    parent = argparse.ArgumentParser(add_help=False)
    where = parent.add_argument_group("where and how (before or after the command)")
    where.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="config TOML (else $INCIDENT_MONITOR_CONFIG, else the one `incident-monitor init` wrote)",
    )
    where.add_argument(
        "--data-dir",
        type=Path,
        default=argparse.SUPPRESS,
        help="data directory (else $INCIDENT_MONITOR_DATA_DIR, else the one `incident-monitor init` made)",
    )
    where.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=argparse.SUPPRESS,
        help="INFO for serve, WARNING for other commands; DEBUG also shows the MCP SDK's session chatter",
    )
    where.add_argument(
        "--log-format", choices=LOG_FORMATS, default=argparse.SUPPRESS, help="text (default) or json, one object a line"
    )
    return parent


GLOBAL_OPTIONS = _global_options()


def example_epilog(*examples: str) -> str:
    return "example" + ("s" if len(examples) > 1 else "") + ":\n" + "\n".join(f"  {e}" for e in examples)


def add_group(sub: Any, name: str, *, help: str, examples: list[str]) -> Any:
    """A command with subcommands (``approvals list``…); returns its subparsers."""
    group = sub.add_parser(
        name,
        help=help,
        description=help,
        epilog=example_epilog(*examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Without a subcommand the group prints its help (with its examples), like the bare command does.
    group.set_defaults(func=lambda _args: _print_help(group))
    return group.add_subparsers(dest=f"{name.replace('-', '_')}_command", metavar="COMMAND")


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_OK


def add_command(
    sub: Any,
    name: str,
    func: Command,
    *,
    help: str,
    examples: list[str],
    json_flag: bool = True,
    needs_config: bool = True,
) -> argparse.ArgumentParser:
    """A leaf command: global options, an example in ``--help``, and ``--json`` unless told otherwise."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=help,
        epilog=example_epilog(*examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[GLOBAL_OPTIONS],
    )
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=func, needs_config=needs_config)
    return parser


def locate(args: argparse.Namespace) -> Locations:
    return find_locations(
        getattr(args, "config", None),
        getattr(args, "data_dir", None),
        config_required=getattr(args, "needs_config", True),
    )


def open_monitor(args: argparse.Namespace) -> Monitor:
    """The monitor at the command's locations; closed by ``main`` when the command returns."""
    monitor = self_monitoring.attach(Monitor.at(locate(args)))
    args.opened.append(monitor)
    return monitor


def print_json(value: BaseModel | Sequence[BaseModel] | dict[str, Any]) -> None:
    if isinstance(value, BaseModel):
        data: Any = value.model_dump(mode="json")
    elif isinstance(value, Sequence):
        data = [v.model_dump(mode="json") for v in value]
    else:
        data = value
    print(json.dumps(data, indent=2, sort_keys=False))


def json_or(args: argparse.Namespace, value: BaseModel | Sequence[BaseModel], render: Callable[[], None]) -> int:
    """``--json`` prints the model as JSON; otherwise ``render`` prints it for people."""
    if args.json:
        print_json(value)
    else:
        render()
    return EXIT_OK


def short_scopes(scopes: list[str] | frozenset[str]) -> str:
    return ",".join(s.split(":", 1)[1] for s in sorted(scopes))
