"""Governance evidence: authority inventory, posture checks, probes, the assessment report, deployment cards."""

from __future__ import annotations

import argparse
from typing import Any

from incident_monitor.cli.common import EXIT_FAILED, EXIT_OK, add_command, open_monitor, print_json
from incident_monitor.domain.enums import Severity
from incident_monitor.policy.principal import local_operator
from incident_monitor.service.governance import cards as governance_cards
from incident_monitor.service.governance import inventory as governance_inventory
from incident_monitor.service.governance import posture as governance_posture
from incident_monitor.service.governance import probes as governance_probes
from incident_monitor.service.governance import report as governance_report


def _catalog() -> list[Any]:
    from incident_monitor.server.tools import tool_catalog

    return tool_catalog()


def cmd_inventory(args: argparse.Namespace) -> int:
    view = governance_inventory.get_authority_inventory(open_monitor(args), local_operator(), _catalog())
    if args.json:
        print_json(view)
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
        open_monitor(args),
        local_operator(),
        _catalog(),
        rules=args.rule or None,
        min_severity=Severity(args.min_severity),
    )
    if args.json:
        print_json(report)
    else:
        for f in report.findings:
            print(f"{f.severity.value:8} {f.rule_id:38} {f.title}\n         evidence: {', '.join(f.evidence_refs)}")
            print(f"         fix: {f.recommendation}")
        print(f"{len(report.findings)} finding(s) {report.counts}; passed: {', '.join(report.passed_rules) or 'none'}")
    return EXIT_FAILED if any(f.severity in (Severity.critical, Severity.high) for f in report.findings) else EXIT_OK


def cmd_probes(args: argparse.Namespace) -> int:
    import anyio

    monitor = open_monitor(args)
    report = anyio.run(lambda: governance_probes.run_assessment_probes(monitor, local_operator(), _catalog()))
    if args.json:
        print_json(report)
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

    monitor = open_monitor(args)
    report = anyio.run(lambda: governance_report.build_assessment_report(monitor, local_operator(), _catalog()))
    if args.format == "json":
        print_json(report)
    else:
        print(report.markdown, end="")
    return EXIT_OK


def cmd_cards(args: argparse.Namespace) -> int:
    result = governance_cards.build_deployment_cards(open_monitor(args), local_operator(), _catalog())
    if args.json:
        print_json(result)
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


def register(sub: Any) -> None:
    add_command(
        sub,
        "inventory",
        cmd_inventory,
        help="the authority inventory: tools, principals, projects, keys, destinations, routes (no secrets)",
        examples=["incident-monitor inventory", "incident-monitor inventory --json"],
    )
    pos = add_command(
        sub,
        "posture",
        cmd_posture,
        help="posture checks (exit 1 when a high or critical finding is open)",
        examples=["incident-monitor posture", "incident-monitor posture --min-severity high --json"],
    )
    pos.add_argument("--rule", action="append", default=None, help="run only this rule (repeatable)")
    pos.add_argument("--min-severity", choices=[s.value for s in Severity], default="low")
    add_command(
        sub,
        "probes",
        cmd_probes,
        help="dry-run assessment probes (exit 1 when one fails)",
        examples=["incident-monitor probes"],
    )
    rep = add_command(
        sub,
        "report",
        cmd_report,
        help="the redacted assessment report",
        examples=["incident-monitor report > assessment.md", "incident-monitor report --format json"],
        json_flag=False,
    )
    rep.add_argument("--format", choices=["md", "json"], default="md")
    add_command(
        sub,
        "cards",
        cmd_cards,
        help="deployment cards for agents, sources and the monitor",
        examples=["incident-monitor cards"],
    )
