"""``export`` and ``retention apply``: the evidence lifecycle (service/evidence_export.py, service/retention.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from incident_monitor.cli.common import EXIT_OK, add_command, add_group, json_or, open_monitor
from incident_monitor.policy.principal import local_operator
from incident_monitor.service.evidence_export import export_evidence
from incident_monitor.service.retention import apply_retention


def cmd_export(args: argparse.Namespace) -> int:
    summary = export_evidence(open_monitor(args), local_operator(), args.output)
    counts = ", ".join(f"{n} {kind}" for kind, n in summary.counts.items()) or "nothing"
    return json_or(
        args, summary, lambda: print(f"exported to {summary.path}: {counts}; audit head seq {summary.head_seq}")
    )


def cmd_retention_apply(args: argparse.Namespace) -> int:
    result = apply_retention(open_monitor(args), local_operator())

    def render() -> None:
        archived = (
            f"{result.audit_rows_archived} audit rows archived to {result.archive_file} "
            f"(through seq {result.archived_through_seq}, signed)"
            if result.archive_file
            else "no audit rows old enough to archive"
        )
        print(f"{result.incidents_deleted} resolved incidents deleted; {archived}")

    json_or(args, result, render)
    return EXIT_OK


def register(sub: Any) -> None:
    export = add_command(
        sub,
        "export",
        cmd_export,
        help="incidents, drafts, approvals, receipts and the audit chain with its checkpoints, as JSON lines",
        examples=["incident-monitor export -o evidence.jsonl"],
    )
    export.add_argument("--output", "-o", type=Path, required=True, help="a new file (written 0600)")
    retention = add_group(
        sub, "retention", help="the [retention] policy", examples=["incident-monitor retention apply"]
    )
    add_command(
        retention,
        "apply",
        cmd_retention_apply,
        help="delete old resolved incidents; archive old audit rows (signed) before removing them",
        examples=["incident-monitor retention apply"],
    )
