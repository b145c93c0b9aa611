"""``tokens`` and ``intake-keys``: credentials an operator issues. Secrets print once, on stdout alone."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from incident_monitor.cli.common import EXIT_OK, add_command, add_group, json_or, open_monitor, short_scopes
from incident_monitor.cli.table import print_table
from incident_monitor.policy.principal import local_operator
from incident_monitor.service import intake_keys, tokens


def cmd_tokens_create(args: argparse.Namespace) -> int:
    created = tokens.create_token(
        open_monitor(args),
        local_operator(),
        name=args.name,
        scopes=args.scopes.split(","),
        expires_in_days=args.expires_in_days,
    )
    print(f"token '{created.token.name}' created with scopes: {', '.join(created.token.scopes)}", file=sys.stderr)
    if created.token.expires_at:
        print(f"expires at {created.token.expires_at.isoformat()}", file=sys.stderr)
    print("copy it now; it is shown only once:", file=sys.stderr)
    print(created.secret)
    return EXIT_OK


def cmd_tokens_list(args: argparse.Namespace) -> int:
    rows = tokens.list_tokens(open_monitor(args), local_operator())
    return json_or(
        args,
        rows,
        lambda: print_table(
            ["NAME", "STATUS", "SINCE/UNTIL", "SCOPES"],
            [
                [
                    row.name,
                    row.status,
                    row.revoked_at if row.status == "revoked" else row.expires_at,
                    short_scopes(row.scopes),
                ]
                for row in rows
            ],
            empty="no tokens; create one with: incident-monitor tokens create --name NAME --scopes read,report",
        ),
    )


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    row = tokens.revoke_token(open_monitor(args), local_operator(), args.name)
    print(f"token '{row.name}' revoked at {row.revoked_at.isoformat() if row.revoked_at else '?'}")
    return EXIT_OK


def cmd_intake_keys_create(args: argparse.Namespace) -> int:
    created = intake_keys.create_intake_key(
        open_monitor(args), local_operator(), project_id=args.project, source_id=args.source
    )
    key = created.key
    bound = f"project '{key.project_id}'" + (f", source '{key.source_id}'" if key.source_id else "")
    print(f"intake key {key.key_id} created for {bound}; it can only report", file=sys.stderr)
    print("copy it now; it is shown only once:", file=sys.stderr)
    print(created.secret)
    return EXIT_OK


def cmd_intake_keys_list(args: argparse.Namespace) -> int:
    rows = intake_keys.list_intake_keys(open_monitor(args), local_operator())
    return json_or(
        args,
        rows,
        lambda: print_table(
            ["KEY", "STATUS", "PROJECT", "SOURCE", "LAST USED"],
            [
                [row.key_id, row.status, row.project_id, row.source_id or "*", row.last_used_at or "never"]
                for row in rows
            ],
            empty="no intake keys; create one with: incident-monitor intake-keys create --project P [--source S]",
        ),
    )


def cmd_intake_keys_disable(args: argparse.Namespace) -> int:
    row = intake_keys.disable_intake_key(open_monitor(args), local_operator(), args.key_id)
    print(f"intake key {row.key_id} disabled at {row.disabled_at.isoformat() if row.disabled_at else '?'}")
    return EXIT_OK


def register(sub: Any) -> None:
    tok = add_group(
        sub,
        "tokens",
        help="agent and operator bearer tokens (for serve --transport http and INCIDENT_MONITOR_TOKEN)",
        examples=["incident-monitor tokens create --name claude-code --scopes read,report,triage"],
    )
    create = add_command(
        tok,
        "create",
        cmd_tokens_create,
        help="create a token (printed once, on stdout alone)",
        examples=["incident-monitor tokens create --name ci-agent --scopes read,report --expires-in-days 30"],
        json_flag=False,
        needs_config=False,
    )
    create.add_argument("--name", required=True)
    create.add_argument("--scopes", required=True, help="comma-separated, e.g. read,report,triage")
    create.add_argument("--expires-in-days", type=int, default=None)
    add_command(
        tok,
        "list",
        cmd_tokens_list,
        help="list tokens (names, scopes, status; never secrets)",
        examples=["incident-monitor tokens list --json"],
        needs_config=False,
    )
    revoke = add_command(
        tok,
        "revoke",
        cmd_tokens_revoke,
        help="revoke a token by name",
        examples=["incident-monitor tokens revoke ci-agent"],
        json_flag=False,
        needs_config=False,
    )
    revoke.add_argument("name")

    ik = add_group(
        sub,
        "intake-keys",
        help="scoped intake keys for CI and services (report only, one project)",
        examples=["incident-monitor intake-keys create --project web-app --source ci"],
    )
    ik_create = add_command(
        ik,
        "create",
        cmd_intake_keys_create,
        help="create a key that can only report for one project (printed once)",
        examples=["KEY=$(incident-monitor intake-keys create --project web-app --source ci)"],
        json_flag=False,
    )
    ik_create.add_argument("--project", required=True, help="a [[projects]] id from the config")
    ik_create.add_argument("--source", default=None, help="bind the key to one of the project's sources")
    add_command(
        ik,
        "list",
        cmd_intake_keys_list,
        help="list intake keys (ids, bindings, status; never secrets)",
        examples=["incident-monitor intake-keys list"],
    )
    ik_disable = add_command(
        ik,
        "disable",
        cmd_intake_keys_disable,
        help="disable an intake key by id",
        examples=["incident-monitor intake-keys disable ik_0123456789abcdef"],
        json_flag=False,
    )
    ik_disable.add_argument("key_id")
