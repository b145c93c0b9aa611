"""``db upgrade | current | history``: the schema's migrations (store/migrate.py).

These open the database without the automatic upgrade every other command does, so ``current`` shows what
is stored and ``upgrade`` reports what it changed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from sqlalchemy.engine import Engine

from incident_monitor.cli.common import EXIT_OK, Command, add_command, add_group, locate
from incident_monitor.config import load_config
from incident_monitor.locations import load_secrets_file
from incident_monitor.service.monitor import database_url, pool_options
from incident_monitor.store import migrate
from incident_monitor.store.engine import create_store_engine
from incident_monitor.store.faults import store_faults
from incident_monitor.store.schema import HEAD_REVISION


def _engine(args: argparse.Namespace) -> Engine:
    found = locate(args)
    # The secrets file beside the config may hold the database URL or its password, as for every command.
    load_secrets_file(found.secrets_file)
    config = load_config(found.config)
    return create_store_engine(found.data_dir.resolve(), database_url(config), pool_options(config))


def _with_engine(command: Callable[[argparse.Namespace, Engine], int]) -> Command:
    def run(args: argparse.Namespace) -> int:
        engine = _engine(args)
        try:
            with store_faults(engine, remember=False):  # a database down or read-only: one line naming the fix
                return command(args, engine)
        finally:
            engine.dispose()

    return run


def cmd_upgrade(args: argparse.Namespace, engine: Engine) -> int:
    result = migrate.upgrade(engine, args.revision)
    if result.created:
        print(f"created the schema at revision {result.after}")
    elif result.changed:
        print(f"upgraded from {result.before or 'the schema from before migrations'} to {result.after}")
    else:
        print(f"already at revision {result.after}; nothing to do")
    return EXIT_OK


def cmd_current(args: argparse.Namespace, engine: Engine) -> int:
    revision = migrate.current(engine)
    outdated = revision != HEAD_REVISION
    if args.json:
        print(json.dumps({"current": revision, "head": HEAD_REVISION, "outdated": outdated}))
    elif revision is None:
        print(f"no revision stored (empty, or from before migrations); head is {HEAD_REVISION}: run db upgrade")
    else:
        print(f"{revision}{' (head)' if not outdated else f' (outdated; head is {HEAD_REVISION}: run db upgrade)'}")
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    revisions = migrate.history()
    if args.json:
        print(json.dumps([asdict(r) for r in revisions], indent=2))
        return EXIT_OK
    for revision in revisions:
        print(f"{revision.revision:24} <- {revision.down_revision or '(base)':24} {revision.description}")
    return EXIT_OK


def register(sub: Any) -> None:
    db = add_group(
        sub,
        "db",
        help="the database schema: upgrade, current revision, history",
        examples=["incident-monitor db current", "incident-monitor db upgrade"],
    )
    up = add_command(
        db,
        "upgrade",
        _with_engine(cmd_upgrade),
        help="upgrade the schema (under the database's write lock; no row is dropped)",
        examples=["incident-monitor db upgrade"],
        json_flag=False,
        needs_config=False,
    )
    up.add_argument("--revision", default="head", help="target revision (default: head)")
    add_command(
        db,
        "current",
        _with_engine(cmd_current),
        help="the revision stored in the database, and whether it is outdated",
        examples=["incident-monitor db current --json"],
        needs_config=False,
    )
    add_command(
        db,
        "history",
        cmd_history,
        help="every revision, oldest first",
        examples=["incident-monitor db history"],
        needs_config=False,
    )
