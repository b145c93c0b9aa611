"""``incident-monitor db upgrade | current | history``: the schema's migrations (store/migrate.py).

These open the database without the automatic upgrade every other command does, so ``current``
shows what is stored and ``upgrade`` reports what it changed. Wired into the CLI by ``add_db_commands``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from incident_monitor.config import Settings, load_config
from incident_monitor.service.monitor import database_url, pool_options
from incident_monitor.store import migrate
from incident_monitor.store.engine import create_store_engine, unavailable
from incident_monitor.store.schema import HEAD_REVISION

EXIT_OK, EXIT_FAILED = 0, 1


SettingsFor = Callable[[argparse.Namespace], Settings]


def _engine(settings: Settings) -> Engine:
    config = load_config(settings.config)
    return create_store_engine(
        settings.data_dir.resolve(), database_url(config, settings.database_url), pool_options(config)
    )


def _with_engine(
    command: Callable[[argparse.Namespace, Engine], int], settings_for: SettingsFor
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        engine = _engine(settings_for(args))
        try:
            return command(args, engine)
        except OperationalError as exc:
            if engine.dialect.name != "postgresql":
                raise
            raise unavailable(engine, exc) from None
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


def add_db_commands(subparsers: Any, common: Callable[..., None], settings_for: SettingsFor) -> None:
    """Add ``db upgrade|current|history`` to the CLI.

    ``common`` adds --config/--data-dir (and --json) to a parser; ``settings_for`` turns parsed arguments into
    Settings (the CLI's own, so flags and environment mean the same as for every other command).
    """
    db = subparsers.add_parser("db", help="the database schema: upgrade, current revision, history").add_subparsers(
        dest="db_command", required=True
    )
    up = db.add_parser("upgrade", help="upgrade the schema (under the database's write lock; no row is dropped)")
    up.add_argument("--revision", default="head", help="target revision (default: head)")
    common(up, json_flag=False)
    up.set_defaults(func=_with_engine(cmd_upgrade, settings_for))
    cur = db.add_parser("current", help="the revision stored in the database, and whether it is outdated")
    common(cur)
    cur.set_defaults(func=_with_engine(cmd_current, settings_for))
    hist = db.add_parser("history", help="every revision, oldest first")
    hist.add_argument("--json", action="store_true", help="print JSON")
    hist.set_defaults(func=cmd_history)
