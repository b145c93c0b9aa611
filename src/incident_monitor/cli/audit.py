"""``audit``: the decision log — list, verify (the database, or an export offline), keys and checkpoints."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from incident_monitor.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    add_command,
    add_group,
    json_or,
    locate,
    open_monitor,
    print_json,
    use_audit_key_file,
)
from incident_monitor.cli.table import print_table
from incident_monitor.config import load_config
from incident_monitor.policy.principal import local_operator
from incident_monitor.service import audit_queries
from incident_monitor.service.audit_checkpoints import checkpoint_file_path, write_checkpoint
from incident_monitor.service.audit_keys import AuditKeyring, load_keyring, public_key_hex
from incident_monitor.service.evidence_export import verify_export_file
from incident_monitor.service.monitor import private_config_dir


def cmd_audit_verify(args: argparse.Namespace) -> int:
    if args.file is not None:
        return _verify_file(args)
    result = audit_queries.verify_audit(open_monitor(args), local_operator(), incremental=args.incremental)
    if args.json:
        print_json(result)
    elif result.ok:
        since = f" after the signed checkpoint of seq {result.from_seq}" if result.from_seq else ""
        print(f"audit chain intact: {result.events_checked} events{since}, head {result.head_hash or '(empty)'}")
    else:
        print(
            f"audit chain BROKEN at event {result.first_broken_seq}: {result.problem} "
            f"({result.events_checked} events verified before it)"
        )
    return EXIT_OK if result.ok else EXIT_FAILED


def _keyring(args: argparse.Namespace) -> AuditKeyring:
    use_audit_key_file(args)
    config = locate(args).config
    return load_keyring(load_config(config).audit, private_config_dir(config))


def _verify_file(args: argparse.Namespace) -> int:
    """Offline: no database. MACs are checked only when an audit key is named (``--audit-key-file``)."""
    keyring = _keyring(args) if getattr(args, "audit_key_file", None) is not None else None
    # Each --public-key may hold several keys (whitespace- or comma-separated), as `audit public-key` prints them.
    given = [key for value in args.public_key for key in value.replace(",", " ").split()]
    result = verify_export_file(args.file, public_keys=given or None, keyring=keyring)
    audit = result.audit
    if args.json:
        print_json(result)
    elif audit.ok:
        trust = (
            "checkpoints verified with the given public key"
            if result.trusted_keys == "given"
            else "checkpoints verified only with the keys the file names (pass --public-key to pin them)"
        )
        macs = "MACs checked" if result.macs_checked else "MACs not checked (no --audit-key-file)"
        print(
            f"export intact: {audit.events_checked} audit events, head seq {audit.head_seq}, "
            f"{audit.checkpoints_checked} checkpoints; {trust}; {macs}"
        )
    else:
        print(f"export BROKEN at event {audit.first_broken_seq}: {audit.problem}")
    return EXIT_OK if audit.ok else EXIT_FAILED


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


def cmd_audit_rotate_key(args: argparse.Namespace) -> int:
    key_id = audit_queries.rotate_audit_key(open_monitor(args), local_operator())
    print(f"audit key rotated: new key {key_id} (older keys kept to verify older rows; restart running servers)")
    return EXIT_OK


def cmd_audit_public_key(args: argparse.Namespace) -> int:
    """Every trusted checkpoint public key, the current one first: checkpoints from before a rotation verify too."""
    keyring = _keyring(args)
    keys = {key_id: public_key_hex(key) for key_id, key in keyring.public_keys().items()}
    current = keyring.current.key_id
    if args.json:
        print(json.dumps({"current": current, "public_keys": keys}, indent=2))
    else:
        for key_id in sorted(keys, key=lambda k: k != current):
            print(keys[key_id])
    return EXIT_OK


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    monitor = open_monitor(args)
    checkpoint = write_checkpoint(monitor)
    if checkpoint is None:
        print("no checkpoint written: the audit chain does not verify (run `incident-monitor audit verify`)")
        return EXIT_FAILED
    path = checkpoint_file_path(monitor)
    print(f"checkpoint of seq {checkpoint.seq} signed with {checkpoint.key_id}, appended to {path}")
    return EXIT_OK


def register(sub: Any) -> None:
    audit = add_group(sub, "audit", help="the audit log of every decision", examples=["incident-monitor audit verify"])
    verify = add_command(
        audit,
        "verify",
        cmd_audit_verify,
        help="check the audit chain: hashes, MACs and signed checkpoints (exit 1 when broken)",
        examples=[
            "incident-monitor audit verify",
            'incident-monitor audit verify --file evidence.jsonl --public-key "$(cat checkpoint-public-key.txt)"',
        ],
    )
    verify.add_argument("--file", type=Path, default=None, help="check an export or archive file offline")
    verify.add_argument(
        "--public-key",
        action="append",
        default=[],
        help="trusted checkpoint public key(s), as `audit public-key` prints them (repeatable)",
    )
    verify.add_argument(
        "--incremental", action="store_true", help="only the rows since the last signed checkpoint (what posture runs)"
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
    add_command(
        audit,
        "rotate-key",
        cmd_audit_rotate_key,
        help="a fresh audit key; older keys stay to verify older rows",
        examples=["incident-monitor audit rotate-key"],
        json_flag=False,
    )
    add_command(
        audit,
        "public-key",
        cmd_audit_public_key,
        help="the checkpoints' public keys (current first), to verify exports elsewhere",
        examples=["incident-monitor audit public-key > checkpoint-public-key.txt"],
    )
    add_command(
        audit,
        "checkpoint",
        cmd_audit_checkpoint,
        help="verify the new rows and sign a checkpoint of the head now",
        examples=["incident-monitor audit checkpoint"],
        json_flag=False,
    )
