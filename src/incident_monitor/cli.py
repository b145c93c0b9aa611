"""The ``incident-monitor`` command: serve, tokens, approvals, audit, status.

Operator commands act as the local operator (``operator:<user>``) through the same service
functions, policy checks and audit log as the MCP tools.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from incident_monitor import __version__
from incident_monitor.cli_db import add_db_commands
from incident_monitor.config import Settings
from incident_monitor.domain.enums import ApprovalStatus, Severity
from incident_monitor.errors import MonitorError
from incident_monitor.policy.principal import local_operator
from incident_monitor.service import (
    approvals,
    audit_queries,
    destination_health,
    incidents,
    intake_keys,
    queries,
    self_monitoring,
    status,
    tokens,
)
from incident_monitor.service.governance import cards as governance_cards
from incident_monitor.service.governance import inventory as governance_inventory
from incident_monitor.service.governance import posture as governance_posture
from incident_monitor.service.governance import probes as governance_probes
from incident_monitor.service.governance import report as governance_report
from incident_monitor.service.monitor import Monitor

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _print_json(value: BaseModel | list[BaseModel] | dict[str, Any]) -> None:
    if isinstance(value, BaseModel):
        data: Any = value.model_dump(mode="json")
    elif isinstance(value, list):
        data = [v.model_dump(mode="json") for v in value]
    else:
        data = value
    print(json.dumps(data, indent=2, sort_keys=False))


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if args.config is not None:
        overrides["config"] = args.config
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    if getattr(args, "no_migrate", False):
        overrides["migrate"] = False
    return Settings(**overrides)


def _open(args: argparse.Namespace) -> Monitor:
    return self_monitoring.attach(Monitor.from_settings(_settings(args)))


# --- commands ----------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from incident_monitor.server.stdio import serve_stdio

    settings = _settings(args)
    if args.transport == "http":
        return _serve_http(args, settings)
    return serve_stdio(settings)


def _serve_http(args: argparse.Namespace, settings: Settings) -> int:
    from incident_monitor.server.http_app import HttpOptions, serve_http

    monitor = self_monitoring.attach(Monitor.from_settings(settings))
    options = HttpOptions(
        host=args.host,
        port=args.port,
        no_auth=args.no_auth,
        allowed_hosts=tuple(args.allowed_host),
        allowed_origins=tuple(args.allowed_origin),
    )
    return serve_http(monitor, options)


def cmd_intake_keys_create(args: argparse.Namespace) -> int:
    created = intake_keys.create_intake_key(
        _open(args), local_operator(), project_id=args.project, source_id=args.source
    )
    key = created.key
    bound = f"project '{key.project_id}'" + (f", source '{key.source_id}'" if key.source_id else "")
    print(f"intake key {key.key_id} created for {bound}; it can only report", file=sys.stderr)
    print("copy it now; it is shown only once:", file=sys.stderr)
    print(created.secret)
    return EXIT_OK


def cmd_intake_keys_list(args: argparse.Namespace) -> int:
    rows = intake_keys.list_intake_keys(_open(args), local_operator())
    if args.json:
        _print_json(rows)
        return EXIT_OK
    if not rows:
        print("no intake keys; create one with: incident-monitor intake-keys create --project P [--source S]")
    for row in rows:
        used = row.last_used_at.isoformat() if row.last_used_at else "never used"
        print(f"{row.key_id:22} {row.status:9} project={row.project_id} source={row.source_id or '*'}  {used}")
    return EXIT_OK


def cmd_intake_keys_disable(args: argparse.Namespace) -> int:
    row = intake_keys.disable_intake_key(_open(args), local_operator(), args.key_id)
    print(f"intake key {row.key_id} disabled at {row.disabled_at.isoformat() if row.disabled_at else '?'}")
    return EXIT_OK


def cmd_tokens_create(args: argparse.Namespace) -> int:
    monitor = _open(args)
    created = tokens.create_token(
        monitor,
        local_operator(),
        name=args.name,
        scopes=args.scopes.split(","),
        expires_in_days=args.expires_in_days,
    )
    print(
        f"token '{created.token.name}' created with scopes: {', '.join(created.token.scopes)}",
        file=sys.stderr,
    )
    if created.token.expires_at:
        print(f"expires at {created.token.expires_at.isoformat()}", file=sys.stderr)
    print("copy it now; it is shown only once:", file=sys.stderr)
    print(created.secret)
    return EXIT_OK


def cmd_tokens_list(args: argparse.Namespace) -> int:
    rows = tokens.list_tokens(_open(args), local_operator())
    if args.json:
        _print_json(rows)
        return EXIT_OK
    if not rows:
        print("no tokens; create one with: incident-monitor tokens create --name NAME --scopes read,report")
    for row in rows:
        when = row.revoked_at if row.status == "revoked" else row.expires_at
        state = f"{row.status} {when.isoformat()}" if when else row.status
        print(f"{row.name:24} {state:40} {','.join(s.split(':', 1)[1] for s in row.scopes)}")
    return EXIT_OK


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    row = tokens.revoke_token(_open(args), local_operator(), args.name)
    print(f"token '{row.name}' revoked at {row.revoked_at.isoformat() if row.revoked_at else '?'}")
    return EXIT_OK


def cmd_approvals_list(args: argparse.Namespace) -> int:
    wanted = None if args.status == "all" else ApprovalStatus(args.status)
    page = queries.list_approvals(_open(args), local_operator(), status=wanted, limit=args.limit)
    if args.json:
        _print_json(page)
        return EXIT_OK
    if not page.approvals:
        print(f"no {args.status} approvals")
    for a in page.approvals:
        print(
            f"{a.approval_id}  {a.status.value:9} draft={a.draft_id} destination={a.destination_id} "
            f"by={a.requested_by} expires={a.expires_at.isoformat()}\n    reason: {a.reason}"
        )
    return EXIT_OK


def _decide(args: argparse.Namespace, decision: str) -> int:
    result = approvals.decide_approval(_open(args), local_operator(), args.approval_id, decision, args.note)  # type: ignore[arg-type]
    if args.json:
        _print_json(result)
        return EXIT_OK
    a = result.approval
    print(
        f"approval {a.approval_id}: {a.status.value} by {a.decided_by or '-'}; "
        f"draft {a.draft_id} is {result.draft_status.value}"
    )
    return EXIT_OK if a.status.value in ("approved", "denied") else EXIT_FAILED


def cmd_audit_verify(args: argparse.Namespace) -> int:
    result = audit_queries.verify_audit(_open(args), local_operator())
    if args.json:
        _print_json(result)
    elif result.ok:
        print(f"audit chain intact: {result.events_checked} events, head {result.head_hash or '(empty)'}")
    else:
        print(
            f"audit chain BROKEN at event {result.first_broken_seq}: {result.problem} "
            f"({result.events_checked} events verified before it)"
        )
    return EXIT_OK if result.ok else EXIT_FAILED


def cmd_audit_list(args: argparse.Namespace) -> int:
    events = audit_queries.list_audit_events(_open(args), local_operator(), limit=args.limit, subject_id=args.subject)
    if args.json:
        _print_json(events)
        return EXIT_OK
    for e in events:
        reasons = "; ".join(e.reasons)
        print(f"#{e.seq:<5} {e.at.strftime('%H:%M:%S')} {e.principal:18} {e.action:22} {e.decision.value:17} {reasons}")
    return EXIT_OK


def cmd_incidents_resolve(args: argparse.Namespace) -> int:
    incident = incidents.resolve_incident(_open(args), local_operator(), args.incident_id, args.note)
    if args.json:
        _print_json(incident)
        return EXIT_OK
    print(f"incident {incident.incident_id} resolved by {incident.resolved_by}: {incident.resolution_note}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    view = status.get_status(_open(args), local_operator())
    if args.json:
        _print_json(view)
        return EXIT_OK
    r = view.readiness
    print(f"incident-monitor {view.version}  policy {view.policy_version}")
    print(
        f"config_valid={r.config_valid} ingest_ready={r.ingest_ready} "
        f"route_preview_ready={r.route_preview_ready} publish_ready={r.publish_ready}"
    )
    for d in view.destinations:
        print(
            f"  destination {d.destination_id} ({d.kind}): {'ready' if d.ready else 'NOT READY'}"
            + (f" — {'; '.join(d.reasons)}" if d.reasons else "")
        )
    print(f"open incidents: {view.open_incidents}  pending approvals: {view.pending_approvals}")
    for p in view.problems:
        print(f"  problem: {p}")
    return EXIT_OK


# --- governance evidence -----------------------------------------------------------------------


def _catalog() -> list[Any]:
    from incident_monitor.server.tools import tool_catalog

    return tool_catalog()


def cmd_inventory(args: argparse.Namespace) -> int:
    view = governance_inventory.get_authority_inventory(_open(args), local_operator(), _catalog())
    if args.json:
        _print_json(view)
        return EXIT_OK
    print(f"authority inventory  policy {view.policy_version}")
    print(f"\ntools ({len(view.tools)}):")
    for t in view.tools:
        flags = [
            n
            for n, on in (("read-only", t.read_only), ("destructive", t.destructive), ("open-world", t.open_world))
            if on
        ]
        print(f"  {t.name:26} {','.join(s.split(':', 1)[1] for s in t.scopes):18} {' '.join(flags)}")
    print(f"\nprincipals ({len(view.principals)}):")
    for p in view.principals:
        print(f"  {p.name:26} {p.kind:12} {p.status:9} {','.join(s.split(':', 1)[1] for s in p.scopes) or '-'}")
    print(f"\nprojects ({len(view.projects)}):")
    for proj in view.projects:
        print(
            f"  {proj.project_id:26} sources={','.join(proj.sources) or '-'} "
            f"destinations={','.join(proj.allowed_destinations) or 'any'}"
        )
    print(f"\nintake keys ({len(view.intake_keys)}):")
    for k in view.intake_keys:
        print(f"  {k.key_id:26} project={k.project_id or '-'} source={k.source_id or '-'} {k.status}")
    print(f"\ndestinations ({len(view.destinations)}):")
    for d in view.destinations:
        state = "ready" if d.ready else "NOT READY"
        print(
            f"  {d.destination_id:26} {d.kind:10} {'external' if d.external else 'internal':9} {state:10} "
            f"approval={'required' if d.approval_required_by_default else 'not required'} "
            f"fails_closed={d.fails_closed}"
        )
    print(f"\nroutes ({len(view.routes)}):")
    for r in view.routes:
        print(
            f"  {r.route_id or '(default)':26} -> {r.destination_id:14} policy={r.approval_policy.value:9} "
            f"approval low/high risk={r.approval_required_low_risk}/{r.approval_required_high_risk}"
        )
    print(f"\noutbound MCP servers ({len(view.outbound_mcp_servers)}):")
    for m in view.outbound_mcp_servers:
        print(f"  {m.destination_id:26} server={m.server} tool={m.tool} allowed_tools={m.allowed_tools}")
    a = view.approval_policies
    print(
        f"\napproval: ttl {a.ttl_minutes} min, high risk requires approval={a.require_approval_for_high_risk}, "
        f"approvers: {', '.join(a.approver_principals) or 'none'}"
    )
    return EXIT_OK


def cmd_posture(args: argparse.Namespace) -> int:
    report = governance_posture.run_posture_checks(
        _open(args),
        local_operator(),
        _catalog(),
        rules=args.rule or None,
        min_severity=Severity(args.min_severity),
    )
    if args.json:
        _print_json(report)
    else:
        for f in report.findings:
            print(f"{f.severity.value:8} {f.rule_id:38} {f.title}\n         evidence: {', '.join(f.evidence_refs)}")
            print(f"         fix: {f.recommendation}")
        print(f"{len(report.findings)} finding(s) {report.counts}; passed: {', '.join(report.passed_rules) or 'none'}")
    return EXIT_FAILED if any(f.severity in (Severity.critical, Severity.high) for f in report.findings) else EXIT_OK


def cmd_probes(args: argparse.Namespace) -> int:
    import anyio

    monitor = _open(args)
    report = anyio.run(lambda: governance_probes.run_assessment_probes(monitor, local_operator(), _catalog()))
    if args.json:
        _print_json(report)
    else:
        for p in report.probes:
            print(f"{p.status:15} {p.probe_id}")
            for c in p.checks:
                mark = {True: "ok  ", False: "FAIL", None: "n/a "}[c.passed]
                print(f"    {mark} {c.name}: {c.observed}")
        print(report.side_effects)
    return EXIT_FAILED if report.counts["failed"] else EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    import anyio

    monitor = _open(args)
    report = anyio.run(lambda: governance_report.build_assessment_report(monitor, local_operator(), _catalog()))
    if args.format == "json":
        _print_json(report)
    else:
        print(report.markdown, end="")
    return EXIT_OK


def cmd_cards(args: argparse.Namespace) -> int:
    result = governance_cards.build_deployment_cards(_open(args), local_operator(), _catalog())
    if args.json:
        _print_json(result)
        return EXIT_OK
    for card in result.cards:
        print(
            f"{card.card_id}: owner={card.owner or '-'} team={card.accountable_team or '-'} "
            f"autonomy={card.autonomy_level or '-'}"
        )
        print(f"    tools: {', '.join(card.authority.tools) or '-'}")
        print(f"    destinations: {', '.join(card.authority.destinations) or '-'}")
        if card.missing_fields:
            print(f"    MISSING: {', '.join(card.missing_fields)}")
    return EXIT_OK


def _add_governance_commands(sub: Any) -> None:
    inv = sub.add_parser("inventory", help="the authority inventory (no secrets, hashes or config values)")
    _common(inv)
    inv.set_defaults(func=cmd_inventory)
    pos = sub.add_parser("posture", help="posture checks (exit 1 when a high or critical finding is open)")
    pos.add_argument("--rule", action="append", default=None, help="run only this rule (repeatable)")
    pos.add_argument("--min-severity", choices=[s.value for s in Severity], default="low")
    _common(pos)
    pos.set_defaults(func=cmd_posture)
    prb = sub.add_parser("probes", help="dry-run assessment probes (exit 1 when one fails)")
    _common(prb)
    prb.set_defaults(func=cmd_probes)
    rep = sub.add_parser("report", help="the redacted assessment report")
    rep.add_argument("--format", choices=["md", "json"], default="md")
    _common(rep, json_flag=False)
    rep.set_defaults(func=cmd_report)
    crd = sub.add_parser("cards", help="deployment cards for agents, sources and the monitor")
    _common(crd)
    crd.set_defaults(func=cmd_cards)


def cmd_destinations_enable(args: argparse.Namespace) -> int:
    changed = destination_health.enable_destination(_open(args), local_operator(), args.destination_id)
    print(f"destination {args.destination_id} " + ("re-enabled" if changed else "was not disabled"))
    return EXIT_OK


# --- parser ------------------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    parser.add_argument("--config", type=Path, default=None, help="config TOML (env INCIDENT_MONITOR_CONFIG)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="data directory (env INCIDENT_MONITOR_DATA_DIR; default ./.incident-monitor)",
    )
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="incident-monitor", description="Governed incident evidence over MCP.")
    parser.add_argument("--version", action="version", version=f"incident-monitor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the MCP server")
    serve.add_argument(
        "--transport",
        choices=["stdio", "http"],
        default="stdio",
        help="stdio (one local client) or http (Streamable HTTP at /mcp, SSE at /sse, the intake endpoint)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="http: address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="http: port (default 8000; 0 picks a free one)")
    serve.add_argument(
        "--no-auth",
        action="store_true",
        help="http, loopback only: no bearer tokens; every caller is the local agent, as on stdio",
    )
    serve.add_argument("--allowed-host", action="append", default=[], help="http: Host header to accept (repeatable)")
    serve.add_argument(
        "--allowed-origin", action="append", default=[], help="http: Origin header to accept (repeatable)"
    )
    serve.add_argument(
        "--no-migrate",
        action="store_true",
        help="refuse to serve a database whose schema is outdated (default: upgrade it first, under a lock)",
    )
    _common(serve, json_flag=False)
    serve.set_defaults(func=cmd_serve)
    add_db_commands(sub, _common, _settings)

    ik = sub.add_parser("intake-keys", help="scoped intake keys for CI and services").add_subparsers(
        dest="intake_keys_command", required=True
    )
    ik_create = ik.add_parser("create", help="create a key that can only report for one project (printed once)")
    ik_create.add_argument("--project", required=True, help="a [[projects]] id from the config")
    ik_create.add_argument("--source", default=None, help="bind the key to one of the project's sources")
    _common(ik_create, json_flag=False)
    ik_create.set_defaults(func=cmd_intake_keys_create)
    ik_list = ik.add_parser("list", help="list intake keys (ids, bindings, status; never secrets)")
    _common(ik_list)
    ik_list.set_defaults(func=cmd_intake_keys_list)
    ik_disable = ik.add_parser("disable", help="disable an intake key by id")
    ik_disable.add_argument("key_id")
    _common(ik_disable, json_flag=False)
    ik_disable.set_defaults(func=cmd_intake_keys_disable)

    tok = sub.add_parser("tokens", help="agent and operator tokens").add_subparsers(
        dest="tokens_command", required=True
    )
    create = tok.add_parser("create", help="create a token (printed once)")
    create.add_argument("--name", required=True)
    create.add_argument("--scopes", required=True, help="comma-separated, e.g. read,report,triage")
    create.add_argument("--expires-in-days", type=int, default=None)
    _common(create, json_flag=False)
    create.set_defaults(func=cmd_tokens_create)
    lst = tok.add_parser("list", help="list tokens (names, scopes, status; never secrets)")
    _common(lst)
    lst.set_defaults(func=cmd_tokens_list)
    revoke = tok.add_parser("revoke", help="revoke a token by name")
    revoke.add_argument("name")
    _common(revoke, json_flag=False)
    revoke.set_defaults(func=cmd_tokens_revoke)

    apr = sub.add_parser("approvals", help="decide approval requests").add_subparsers(
        dest="approvals_command", required=True
    )
    alist = apr.add_parser("list", help="list approval requests")
    alist.add_argument("--status", choices=[s.value for s in ApprovalStatus] + ["all"], default="pending")
    alist.add_argument("--limit", type=int, default=50)
    _common(alist)
    alist.set_defaults(func=cmd_approvals_list)
    for verb in ("approve", "deny"):
        p = apr.add_parser(verb, help=f"{verb} a pending request as the local operator")
        p.add_argument("approval_id")
        p.add_argument("--note", required=True, help="why (recorded in the audit log)")
        _common(p)
        p.set_defaults(func=(lambda v: lambda a: _decide(a, v))(verb))

    audit = sub.add_parser("audit", help="audit log").add_subparsers(dest="audit_command", required=True)
    verify = audit.add_parser("verify", help="check the audit log's hash chain")
    _common(verify)
    verify.set_defaults(func=cmd_audit_verify)

    alog = audit.add_parser("list", help="the newest audit events, oldest first")
    alog.add_argument("--limit", type=int, default=30)
    alog.add_argument("--subject", default=None, help="only events about this incident/draft/approval id")
    _common(alog)
    alog.set_defaults(func=cmd_audit_list)

    inc = sub.add_parser("incidents", help="operator actions on incidents").add_subparsers(
        dest="incidents_command", required=True
    )
    resolve = inc.add_parser("resolve", help="resolve an incident with a note")
    resolve.add_argument("incident_id")
    resolve.add_argument("--note", required=True, help="what fixed it (required)")
    _common(resolve)
    resolve.set_defaults(func=cmd_incidents_resolve)

    st = sub.add_parser("status", help="readiness of the monitor and its destinations")
    _common(st)
    st.set_defaults(func=cmd_status)
    _add_governance_commands(sub)

    dst = sub.add_parser("destinations", help="destination state").add_subparsers(
        dest="destinations_command", required=True
    )
    enable = dst.add_parser("enable", help="re-enable a destination its receiver disabled (HTTP 410)")
    enable.add_argument("destination_id")
    _common(enable, json_flag=False)
    enable.set_defaults(func=cmd_destinations_enable)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except MonitorError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE if exc.code in ("config_error", "invalid_input", "credential_error") else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
