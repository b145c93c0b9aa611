"""What an operator looks at and decides: incidents, drafts, approvals, receipts.

Every read and decision goes through the same service functions (scopes, audit) as the MCP tools,
as the local operator.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, Literal

from incident_monitor.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    add_command,
    add_group,
    json_or,
    locate,
    open_monitor,
    print_json,
)
from incident_monitor.cli.table import print_fields, print_table
from incident_monitor.domain.enums import ApprovalStatus, DraftStatus, IncidentStatus, Severity
from incident_monitor.domain.io import ApprovalSummary, DraftSummary, ReceiptSummary
from incident_monitor.domain.models import ApprovalRequestBase
from incident_monitor.errors import InvalidTransition
from incident_monitor.policy.principal import local_operator
from incident_monitor.service import approvals, incidents, queries, route_preview
from incident_monitor.service.monitor import Monitor


def _paging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=50, help="rows per page (default 50)")
    parser.add_argument("--offset", type=int, default=0, help="the next_offset a previous page printed")


def _drafts_table(drafts: list[DraftSummary], *, empty: str, more: int | None = None, indent: str = "") -> None:
    print_table(
        ["DRAFT", "STATUS", "SEVERITY", "UPDATED", "TITLE"],
        [[d.draft_id, d.status, d.severity, d.updated_at, d.title] for d in drafts],
        empty=empty,
        more=more,
        indent=indent,
    )


def _receipts_table(receipts: list[ReceiptSummary], *, empty: str, more: int | None = None, indent: str = "") -> None:
    print_table(
        ["RECEIPT", "STATUS", "DESTINATION", "DRAFT", "ATTEMPTS", "UPDATED", "EXTERNAL"],
        [
            [r.receipt_id, r.status, r.destination_id, r.draft_id, r.attempt_count, r.updated_at, r.external_id]
            for r in receipts
        ],
        empty=empty,
        more=more,
        indent=indent,
    )


def _approvals_table(
    rows: Sequence[ApprovalRequestBase | ApprovalSummary], *, empty: str, more: int | None = None, indent: str = ""
) -> None:
    """A full request shows its reason; a draft's approval summaries show the decision note instead."""
    print_table(
        ["APPROVAL", "STATUS", "DRAFT", "DESTINATION", "REQUESTED BY", "EXPIRES", "REASON/NOTE"],
        [
            [
                a.approval_id,
                a.status,
                a.draft_id,
                a.destination_id,
                a.requested_by,
                a.expires_at,
                a.reason if isinstance(a, ApprovalRequestBase) else a.decision_note,
            ]
            for a in rows
        ],
        empty=empty,
        more=more,
        indent=indent,
    )


def _indented(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in (text.splitlines() or ["-"]))


# --- incidents ---------------------------------------------------------------------------------


def cmd_incidents_list(args: argparse.Namespace) -> int:
    page = queries.list_incidents(
        open_monitor(args),
        local_operator(),
        status=None if args.status == "all" else IncidentStatus(args.status),
        severity=Severity(args.severity) if args.severity else None,
        source=args.source,
        project_id=args.project,
        limit=args.limit,
        offset=args.offset,
    )
    return json_or(
        args,
        page,
        lambda: print_table(
            ["INCIDENT", "STATUS", "SEVERITY", "SOURCE", "SEEN", "LAST SEEN", "TITLE"],
            [
                [i.incident_id, i.status, i.severity, i.source, i.occurrence_count, i.last_seen_at, i.title]
                for i in page.incidents
            ],
            empty=f"no {'' if args.status == 'all' else args.status + ' '}incidents",
            more=page.next_offset,
        ),
    )


def cmd_incidents_show(args: argparse.Namespace) -> int:
    view = queries.get_incident(open_monitor(args), local_operator(), args.incident_id)
    if args.json:
        print_json(view)
        return EXIT_OK
    i = view.incident
    print_fields(
        [
            ("incident", i.incident_id),
            ("title", i.title),
            ("status", i.status),
            ("severity", i.severity),
            ("source / event", f"{i.source} / {i.event} (level {i.level})"),
            ("project", i.project_id),
            ("route tags", i.route_tags),
            ("risk", f"{i.risk_category or '-'} {i.risk_level.value if i.risk_level else ''}".strip()),
            ("occurrences", f"{i.occurrence_count} (recurrences {i.recurrence_count})"),
            ("first / last seen", f"{i.first_seen_at.isoformat()} / {i.last_seen_at.isoformat()}"),
            ("reported by", i.reported_by),
            (
                "resolved",
                f"{i.resolved_at.isoformat()} by {i.resolved_by}: {i.resolution_note}" if i.resolved_at else None,
            ),
            ("evidence refs", i.evidence_refs),
        ]
    )
    print("detail:\n" + _indented(i.detail))
    print("\ndrafts:")
    _drafts_table(view.drafts, empty="(none)", indent="    ")
    print(f"\nreceipts: incident-monitor receipts list --incident {i.incident_id}")
    if view.timeline:
        print(f"\ntimeline of run {view.timeline_run_id}:")
        print_table(
            ["AT", "PRINCIPAL", "ACTION", "DECISION", "REASONS"],
            [[e.at, e.principal, e.action, e.decision, "; ".join(e.reasons)] for e in view.timeline],
            empty="",
            indent="    ",
        )
    return EXIT_OK


def cmd_incidents_resolve(args: argparse.Namespace) -> int:
    incident = incidents.resolve_incident(open_monitor(args), local_operator(), args.incident_id, args.note)
    if args.json:
        print_json(incident)
        return EXIT_OK
    print(f"incident {incident.incident_id} resolved by {incident.resolved_by}: {incident.resolution_note}")
    return EXIT_OK


# --- drafts ------------------------------------------------------------------------------------


def cmd_drafts_list(args: argparse.Namespace) -> int:
    page = queries.list_drafts(
        open_monitor(args),
        local_operator(),
        status=DraftStatus(args.status) if args.status else None,
        incident_id=args.incident,
        limit=args.limit,
        offset=args.offset,
    )
    return json_or(args, page, lambda: _drafts_table(page.drafts, empty="no drafts", more=page.next_offset))


def cmd_drafts_show(args: argparse.Namespace) -> int:
    review = route_preview.review_draft(open_monitor(args), local_operator(), args.draft_id)
    if args.json:
        print_json(review)
        return EXIT_OK
    d, route = review.detail.draft, review.route
    print_fields(
        [
            ("draft", d.draft_id),
            ("incident", d.incident_id),
            ("title", d.title),
            ("status", d.status),
            ("severity", d.severity),
            ("source", d.source),
            ("route tags", d.route_tags),
            ("revision", d.revision),
            ("evidence digest", d.evidence_digest),
        ]
    )
    print("body:\n" + _indented(d.body))
    print("evidence (redacted, as it would be published):\n" + _indented(json.dumps(d.evidence, indent=2)))
    triage = review.detail.latest_triage
    print("\ntriage:")
    if triage is None:
        print("    not triaged yet")
    else:
        print_fields(
            [
                ("run", triage.triage_run_id),
                ("suggested severity", triage.suggested_severity),
                ("summary", triage.evidence_summary),
                ("findings", "; ".join(triage.findings) or None),
            ],
            indent="    ",
        )
    print("\nroute preview (what publish would do now):")
    print_fields(
        [
            ("destination", f"{route.destination_id or '-'} ({route.destination_kind or '-'})"),
            ("route", route.match_reason),
            ("approval required", f"{route.approval_required}: {'; '.join(route.approval_reasons)}"),
            ("blocked", f"{route.blocked}: {'; '.join(route.blocked_reasons)}" if route.blocked else "no"),
            ("policy version", route.policy_version),
        ],
        indent="    ",
    )
    print("\napprovals:")
    _approvals_table(review.detail.approvals, empty="(none)", indent="    ")
    print("\nreceipts:")
    _receipts_table(review.receipts, empty="(none)", indent="    ")
    print(f"\nnext step: {review.detail.next_step}")
    return EXIT_OK


# --- approvals ---------------------------------------------------------------------------------


def cmd_approvals_list(args: argparse.Namespace) -> int:
    wanted = None if args.status == "all" else ApprovalStatus(args.status)
    page = queries.list_approvals(
        open_monitor(args), local_operator(), status=wanted, limit=args.limit, offset=args.offset
    )
    empty = f"no {'' if args.status == 'all' else args.status + ' '}approvals"
    return json_or(args, page, lambda: _approvals_table(page.approvals, empty=empty, more=page.next_offset))


def cmd_approvals_show(args: argparse.Namespace) -> int:
    monitor = open_monitor(args)
    a = queries.get_approval(monitor, local_operator(), args.approval_id)
    if args.json:
        print_json(a)
        return EXIT_OK
    draft = queries.get_draft(monitor, local_operator(), a.draft_id).draft
    print_fields(
        [
            ("approval", a.approval_id),
            ("status", a.status),
            ("draft", f"{a.draft_id}: {draft.title}"),
            ("destination", a.destination_id),
            ("route", a.route_id or "(default destination)"),
            (
                "evidence digest",
                a.evidence_digest + ("" if a.evidence_digest == draft.evidence_digest else " (draft changed since)"),
            ),
            (
                "policy version",
                a.policy_version
                + (
                    ""
                    if a.policy_version == monitor.config.policy_version
                    else f" (this CLI's config: {monitor.config.policy_version})"
                ),
            ),
            ("requested", f"by {a.requested_by} at {a.requested_at.isoformat()}: {a.reason}"),
            ("expires", a.expires_at),
            (
                "decided",
                f"{a.status.value} by {a.decided_by} at {a.decided_at.isoformat()}: {a.decision_note}"
                if a.decided_at
                else None,
            ),
            ("used by receipt", a.used_by_receipt_id),
        ]
    )
    print(f"\nreview the evidence: incident-monitor drafts show {a.draft_id}")
    return EXIT_OK


def _policy_mismatch(args: argparse.Namespace, monitor: Monitor, approval_id: str) -> str | None:
    """Why a decision was refused when this CLI's config is not the one the request was made under."""
    requested_under = queries.get_approval(monitor, local_operator(), approval_id).policy_version
    loaded = monitor.config.policy_version
    if requested_under == loaded:
        return None
    where = locate(args)
    return (
        f"this CLI loaded {where.config} (from {where.config_from}; policy {loaded}); the server runs policy "
        f"{requested_under} (approval {approval_id} was requested under it), so it uses another config or the "
        "config changed since. Run this command with the server's config (--config PATH or "
        "INCIDENT_MONITOR_CONFIG); if the config changed on purpose, the agent must request approval again."
    )


def _decide(args: argparse.Namespace, decision: Literal["approve", "deny"]) -> int:
    monitor = open_monitor(args)
    operator = local_operator()
    try:
        result = approvals.decide_approval(monitor, operator, args.approval_id, decision, args.note)
    except InvalidTransition as exc:
        cause = _policy_mismatch(args, monitor, args.approval_id)
        if cause is None:
            raise
        print(f"error: {cause}\n  (service: {exc.message})", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print_json(result)
        return EXIT_OK
    a = result.approval
    print(
        f"approval {a.approval_id}: {a.status.value} by {a.decided_by or '-'}; "
        f"draft {a.draft_id} is {result.draft_status.value}"
    )
    title = queries.get_draft(monitor, operator, a.draft_id).draft.title
    print_fields(
        [
            ("draft", f"{a.draft_id}: {title}"),
            ("destination", a.destination_id),
            ("evidence digest", a.evidence_digest),
            ("next step", result.next_step),
        ],
        indent="  ",
    )
    return EXIT_OK if a.status in (ApprovalStatus.approved, ApprovalStatus.denied) else EXIT_FAILED


def cmd_approvals_approve(args: argparse.Namespace) -> int:
    return _decide(args, "approve")


def cmd_approvals_deny(args: argparse.Namespace) -> int:
    return _decide(args, "deny")


# --- receipts ----------------------------------------------------------------------------------


def cmd_receipts_list(args: argparse.Namespace) -> int:
    page = queries.list_receipts(
        open_monitor(args),
        local_operator(),
        draft_id=args.draft,
        incident_id=args.incident,
        limit=args.limit,
        offset=args.offset,
    )
    return json_or(args, page, lambda: _receipts_table(page.receipts, empty="no receipts", more=page.next_offset))


def cmd_receipts_show(args: argparse.Namespace) -> int:
    r = queries.get_receipt(open_monitor(args), local_operator(), args.receipt_id)
    if args.json:
        print_json(r)
        return EXIT_OK
    print_fields(
        [
            ("receipt", r.receipt_id),
            ("status", r.status),
            ("destination", f"{r.destination_id} ({r.destination_kind})"),
            ("route", f"{r.route_id or '(default destination)'}: {r.match_reason}"),
            ("draft / incident", f"{r.draft_id} / {r.incident_id}"),
            ("evidence digest", r.evidence_digest),
            ("approval", r.approval_id),
            ("external", f"{r.external_id or '-'} {r.external_url or ''}".strip()),
            ("attempts", r.attempt_count),
            ("error", r.error),
            ("response", r.response_excerpt),
            ("published by", r.published_by),
            ("created / updated", f"{r.created_at.isoformat()} / {r.updated_at.isoformat()}"),
        ]
    )
    return EXIT_OK


# --- parser ------------------------------------------------------------------------------------


def register(sub: Any) -> None:
    _register_incidents(sub)
    _register_drafts(sub)
    _register_approvals(sub)
    _register_receipts(sub)


def _register_incidents(sub: Any) -> None:
    inc = add_group(
        sub,
        "incidents",
        help="incidents: list, show, resolve",
        examples=["incident-monitor incidents list --status open"],
    )
    lst = add_command(
        inc,
        "list",
        cmd_incidents_list,
        help="incidents, newest first",
        examples=[
            "incident-monitor incidents list",
            "incident-monitor incidents list --status all --severity high --json",
        ],
    )
    lst.add_argument("--status", choices=[s.value for s in IncidentStatus] + ["all"], default="all")
    lst.add_argument("--severity", choices=[s.value for s in Severity], default=None)
    lst.add_argument("--source", default=None)
    lst.add_argument("--project", default=None, help="a [[projects]] id")
    _paging(lst)
    show = add_command(
        inc,
        "show",
        cmd_incidents_show,
        help="one incident: detail, drafts, receipts and its run's timeline",
        examples=["incident-monitor incidents show inc_0123456789abcdef"],
    )
    show.add_argument("incident_id")
    resolve = add_command(
        inc,
        "resolve",
        cmd_incidents_resolve,
        help="resolve an incident with a note",
        examples=['incident-monitor incidents resolve inc_0123456789abcdef --note "Rotated the build cache."'],
    )
    resolve.add_argument("incident_id")
    resolve.add_argument("--note", required=True, help="what fixed it (required)")


def _register_drafts(sub: Any) -> None:
    drf = add_group(
        sub,
        "drafts",
        help="drafts: what would be published",
        examples=["incident-monitor drafts list --status approval_required"],
    )
    lst = add_command(
        drf,
        "list",
        cmd_drafts_list,
        help="drafts, most recently changed first",
        examples=["incident-monitor drafts list", "incident-monitor drafts list --status approval_required --json"],
    )
    lst.add_argument("--status", choices=[s.value for s in DraftStatus], default=None)
    lst.add_argument("--incident", default=None, help="only this incident's drafts")
    _paging(lst)
    show = add_command(
        drf,
        "show",
        cmd_drafts_show,
        help="one draft: evidence, digest, triage, and the route publish would take now",
        examples=["incident-monitor drafts show drf_0123456789abcdef"],
    )
    show.add_argument("draft_id")


def _register_approvals(sub: Any) -> None:
    apr = add_group(
        sub,
        "approvals",
        help="approval requests: list, show, approve, deny",
        examples=[
            "incident-monitor approvals list",
            'incident-monitor approvals approve apr_0123456789abcdef --note "Evidence checked."',
        ],
    )
    lst = add_command(
        apr,
        "list",
        cmd_approvals_list,
        help="approval requests (pending by default)",
        examples=["incident-monitor approvals list", "incident-monitor approvals list --status all --json"],
    )
    lst.add_argument("--status", choices=[s.value for s in ApprovalStatus] + ["all"], default="pending")
    _paging(lst)
    show = add_command(
        apr,
        "show",
        cmd_approvals_show,
        help="one approval request: what it would publish, where, and under which policy",
        examples=["incident-monitor approvals show apr_0123456789abcdef"],
    )
    show.add_argument("approval_id")
    for verb, func, example_note in (
        ("approve", cmd_approvals_approve, "Evidence checked; page on-call."),
        ("deny", cmd_approvals_deny, "Known flake; not worth a page."),
    ):
        decide = add_command(
            apr,
            verb,
            func,
            help=f"{verb} a pending request as the local operator; prints the draft, destination and digest",
            examples=[f'incident-monitor approvals {verb} apr_0123456789abcdef --note "{example_note}"'],
        )
        decide.add_argument("approval_id")
        decide.add_argument("--note", required=True, help="why (recorded in the audit log)")


def _register_receipts(sub: Any) -> None:
    rcp = add_group(sub, "receipts", help="publish receipts: list, show", examples=["incident-monitor receipts list"])
    lst = add_command(
        rcp,
        "list",
        cmd_receipts_list,
        help="receipts, newest first",
        examples=[
            "incident-monitor receipts list",
            "incident-monitor receipts list --draft drf_0123456789abcdef --json",
        ],
    )
    lst.add_argument("--draft", default=None, help="only this draft's receipts")
    lst.add_argument("--incident", default=None, help="only this incident's receipts")
    _paging(lst)
    show = add_command(
        rcp,
        "show",
        cmd_receipts_show,
        help="one receipt: destination, outcome, attempts, error",
        examples=["incident-monitor receipts show rcp_0123456789abcdef"],
    )
    show.add_argument("receipt_id")
