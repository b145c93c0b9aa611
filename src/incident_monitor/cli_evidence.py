"""CLI wiring of the evidence lifecycle: export, offline verify, audit keys and checkpoints, retention.

Kept apart from the main parser so it can be wired into whichever parser module is current:
``add_evidence_commands(subparsers)`` adds ``export`` and ``retention``; ``add_audit_commands(audit)``
adds ``rotate-key``, ``public-key`` and ``checkpoint`` under ``audit``; ``add_verify_arguments`` and
``verify_file_or_none`` give ``audit verify`` its ``--file``, ``--public-key`` and ``--incremental``.
The command logic lives in the services (evidence_export, retention, audit_queries).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from incident_monitor.config import Settings, load_config
from incident_monitor.policy.principal import local_operator
from incident_monitor.service import audit_queries, self_monitoring
from incident_monitor.service.audit_checkpoints import checkpoint_file_path, write_checkpoint
from incident_monitor.service.audit_keys import KEY_ENV, KEY_FILE_ENV, load_keyring, public_key_hex
from incident_monitor.service.evidence_export import export_evidence, verify_export_file
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.publishing import attach_checkpoint_delivery
from incident_monitor.service.retention import apply_retention

EXIT_OK, EXIT_FAILED = 0, 1


def _common(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    parser.add_argument("--config", type=Path, default=None, help="config TOML (env INCIDENT_MONITOR_CONFIG)")
    parser.add_argument("--data-dir", type=Path, default=None, help="data directory (env INCIDENT_MONITOR_DATA_DIR)")
    add_key_file_argument(parser)
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print JSON")


def add_key_file_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--audit-key-file",
        type=Path,
        default=None,
        help=f"audit key file, outside the data dir (env {KEY_FILE_ENV}; config [audit] key_file)",
    )


def use_key_file(args: argparse.Namespace) -> None:
    # A one-shot process: the flag becomes the environment variable the key loader reads.
    if getattr(args, "audit_key_file", None) is not None:
        os.environ[KEY_FILE_ENV] = str(args.audit_key_file)


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "config", None) is not None:
        overrides["config"] = args.config
    if getattr(args, "data_dir", None) is not None:
        overrides["data_dir"] = args.data_dir
    return Settings(**overrides)


def _open(args: argparse.Namespace) -> Monitor:
    use_key_file(args)
    return attach_checkpoint_delivery(self_monitoring.attach(Monitor.from_settings(_settings(args))))


def _print(value: Any, as_json: bool, text: str) -> None:
    if as_json:
        data = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
        print(json.dumps(data, indent=2))
    else:
        print(text)


# --- commands ------------------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    monitor = _open(args)
    try:
        summary = export_evidence(monitor, local_operator(), args.output)
    finally:
        monitor.close()
    counts = ", ".join(f"{n} {kind}" for kind, n in summary.counts.items()) or "nothing"
    _print(summary, args.json, f"exported to {summary.path}: {counts}; audit head seq {summary.head_seq}")
    return EXIT_OK


def cmd_retention_apply(args: argparse.Namespace) -> int:
    monitor = _open(args)
    try:
        result = apply_retention(monitor, local_operator())
    finally:
        monitor.close()
    archived = (
        f"{result.audit_rows_archived} audit rows archived to {result.archive_file} "
        f"(through seq {result.archived_through_seq}, signed)"
        if result.archive_file
        else "no audit rows old enough to archive"
    )
    _print(result, args.json, f"{result.incidents_deleted} resolved incidents deleted; {archived}")
    return EXIT_OK


def cmd_audit_rotate_key(args: argparse.Namespace) -> int:
    monitor = _open(args)
    try:
        key_id = audit_queries.rotate_audit_key(monitor, local_operator())
    finally:
        monitor.close()
    print(f"audit key rotated: new key {key_id} (older keys kept to verify older rows; restart running servers)")
    return EXIT_OK


def cmd_audit_public_key(args: argparse.Namespace) -> int:
    """The checkpoints' public key(s), for `audit verify --file F --public-key KEY` elsewhere."""
    use_key_file(args)
    keyring = load_keyring(load_config(_settings(args).config).audit)
    keys = {key_id: public_key_hex(key) for key_id, key in keyring.public_keys().items()}
    if args.json:
        print(json.dumps({"current": keyring.current.key_id, "public_keys": keys}, indent=2))
    else:
        # Every key still trusted, the current one first: checkpoints signed before a rotation verify too.
        current = keyring.current.key_id
        for key_id in sorted(keys, key=lambda k: k != current):
            print(keys[key_id])
    return EXIT_OK


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    monitor = _open(args)
    try:
        checkpoint = write_checkpoint(monitor)
        path = checkpoint_file_path(monitor)
    finally:
        monitor.close()
    if checkpoint is None:
        print("no checkpoint written: the audit chain does not verify (run `incident-monitor audit verify`)")
        return EXIT_FAILED
    print(f"checkpoint of seq {checkpoint.seq} signed with {checkpoint.key_id}, appended to {path}")
    return EXIT_OK


def verify_file_or_none(args: argparse.Namespace) -> int | None:
    """``audit verify --file F``: the offline check (returns the exit code), or None when --file is absent."""
    if getattr(args, "file", None) is None:
        return None
    keyring = None
    if os.environ.get(KEY_ENV) or os.environ.get(KEY_FILE_ENV) or getattr(args, "audit_key_file", None):
        use_key_file(args)
        keyring = load_keyring(load_config(_settings(args).config).audit)
    # Each --public-key may hold several keys (whitespace- or comma-separated), as `audit public-key` prints them.
    given = [key for value in args.public_key for key in value.replace(",", " ").split()]
    result = verify_export_file(args.file, public_keys=given or None, keyring=keyring)
    audit = result.audit
    if args.json:
        _print(result, True, "")
    elif audit.ok:
        trust = (
            "checkpoints verified with the given public key"
            if result.trusted_keys == "given"
            else "checkpoints verified only with the keys the file names (pass --public-key to pin them)"
        )
        macs = "MACs checked" if result.macs_checked else "MACs not checked (no audit key given)"
        print(
            f"export intact: {audit.events_checked} audit events, head seq {audit.head_seq}, "
            f"{audit.checkpoints_checked} checkpoints; {trust}; {macs}"
        )
    else:
        print(f"export BROKEN at event {audit.first_broken_seq}: {audit.problem}")
    return EXIT_OK if audit.ok else EXIT_FAILED


def add_verify_arguments(verify: argparse.ArgumentParser) -> None:
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
    if not any(action.dest == "audit_key_file" for action in verify._actions):
        add_key_file_argument(verify)


def add_audit_commands(audit: Any) -> None:
    """Under ``audit``: rotate-key, public-key, checkpoint."""
    rotate = audit.add_parser("rotate-key", help="a fresh audit key (older keys stay to verify older rows)")
    _common(rotate, json_flag=False)
    rotate.set_defaults(func=cmd_audit_rotate_key)
    public = audit.add_parser("public-key", help="the checkpoints' public keys (current first), to verify exports")
    _common(public)
    public.set_defaults(func=cmd_audit_public_key)
    checkpoint = audit.add_parser("checkpoint", help="verify the new rows and sign a checkpoint of the head now")
    _common(checkpoint, json_flag=False)
    checkpoint.set_defaults(func=cmd_audit_checkpoint)


def add_evidence_commands(sub: Any) -> None:
    """Top level: export, retention apply."""
    export = sub.add_parser("export", help="incidents, drafts, approvals, receipts and the audit chain as JSON lines")
    export.add_argument("--output", "-o", type=Path, required=True, help="a new file (written 0600)")
    _common(export)
    export.set_defaults(func=cmd_export)
    retention = sub.add_parser("retention", help="the [retention] policy").add_subparsers(
        dest="retention_command", required=True
    )
    apply = retention.add_parser("apply", help="delete old resolved incidents; archive old audit rows (signed)")
    _common(apply)
    apply.set_defaults(func=cmd_retention_apply)
