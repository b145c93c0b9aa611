"""Tenant isolation: the issue-12 attacks on fingerprints, projects and self-monitoring, replayed.

Two projects, ``payments`` (which may publish only to telemetry) and ``web-app``, each with its own
intake key, report over the real HTTP intake endpoint; agents and the operator act over MCP. Every
attack the issue found is a case here, and each must fail:

- fold: web-app sends payments' fingerprint (bare or scoped) and must neither join payments' incident
  nor learn its incident_id, draft_id or severity;
- squat: web-app registers a fingerprint first; payments' later critical report must still open its
  own critical incident;
- reopen: web-app sends the fingerprint of a resolved payments incident, which must stay resolved;
- project escape: a project id differing by case or whitespace is refused, never matched;
- selfmon: a caller-chosen ``selfmon:`` fingerprint is refused, and the caller's later denied calls
  still raise the critical self-monitoring incident;
- principal scope: with no project, one agent's fingerprint cannot reach another agent's incident.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest
from sqlmodel import col, select

from incident_monitor.domain.enums import IncidentStatus, Severity
from incident_monitor.domain.io import IncidentReport
from incident_monitor.domain.models import AuditEvent, Incident
from incident_monitor.policy.principal import local_operator
from incident_monitor.service import intake_keys
from incident_monitor.service.intake import report_incident
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.route_preview import preview_route
from support.http_helpers import http_server
from support.mcp_helpers import call_ok, call_refused, mcp_client
from support.monitors import AGENT, OPERATOR, MonitorFactory, flow_config, principal

pytestmark = pytest.mark.anyio

INTAKE = "/incident-monitor/intake/report"
PROJECTS = [
    {"id": "payments", "sources": ["ci"], "allowed_destinations": ["telemetry"]},
    {"id": "web-app", "sources": ["ci"]},
]
SHARED_FINGERPRINT = "db-primary-down"


@pytest.fixture
def monitor(make_monitor: MonitorFactory, webhook_secret: str) -> Monitor:
    return make_monitor(flow_config(projects=PROJECTS))


@pytest.fixture
def url(monitor: Monitor) -> Iterator[str]:
    with http_server(monitor) as base:
        yield base


def key_for(monitor: Monitor, project: str) -> str:
    return intake_keys.create_intake_key(monitor, local_operator(), project_id=project, source_id="ci").secret


def post(url: str, key: str, project: str, **report: Any) -> httpx2.Response:
    payload = {
        "project_id": project,
        "report": {"title": "Primary database unreachable", "event": "db.primary.down", "level": "error", **report},
    }
    return httpx2.post(f"{url}{INTAKE}", json=payload, headers={"x-incident-monitor-intake-key": key}, timeout=30)


def reported(response: httpx2.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


def incident(monitor: Monitor, incident_id: str) -> Incident:
    with monitor.session() as session:
        row = session.get(Incident, incident_id)
        assert row is not None
        return row


def incidents(monitor: Monitor) -> list[Incident]:
    with monitor.session() as session:
        return list(session.exec(select(Incident).order_by(col(Incident.first_seen_at))).all())


def assert_reveals_nothing_of(answer: dict[str, Any] | str, victim: dict[str, Any]) -> None:
    text = str(answer)
    assert victim["incident_id"] not in text
    assert victim["draft_id"] not in text


# --- fold: one project's key joins another project's incident ---------------------------------------


@pytest.mark.parametrize(
    "fingerprint",
    [SHARED_FINGERPRINT, f"project:payments|{SHARED_FINGERPRINT}", None],
    ids=["bare", "scoped", "computed"],
)
def test_a_key_cannot_fold_into_another_projects_incident(monitor: Monitor, url: str, fingerprint: str | None) -> None:
    payments, web_app = key_for(monitor, "payments"), key_for(monitor, "web-app")
    extra = {"fingerprint": fingerprint} if fingerprint is not None else {}
    victim = reported(post(url, payments, "payments", risk_level="critical", **extra))

    attack = reported(post(url, web_app, "web-app", level="warning", **extra))

    assert attack["deduplicated"] is False and attack["occurrence_count"] == 1
    assert attack["incident_id"] != victim["incident_id"]
    assert_reveals_nothing_of(attack, victim)
    assert attack["severity"] != "critical"
    assert incident(monitor, victim["incident_id"]).occurrence_count == 1
    assert incident(monitor, attack["incident_id"]).project_id == "web-app"


def test_an_agent_without_a_project_cannot_fold_into_a_projects_incident(monitor: Monitor, url: str) -> None:
    victim = reported(post(url, key_for(monitor, "payments"), "payments", fingerprint=SHARED_FINGERPRINT))

    async def attack() -> dict[str, Any]:
        async with mcp_client(monitor, AGENT) as agent:
            return await call_ok(
                agent,
                "report_incident",
                title="Primary database unreachable",
                source="ci",
                event="db.primary.down",
                fingerprint=f"project:payments|{SHARED_FINGERPRINT}",
            )

    answer = anyio.run(attack)
    assert answer["deduplicated"] is False
    assert_reveals_nothing_of(answer, victim)
    assert incident(monitor, victim["incident_id"]).occurrence_count == 1


# --- squat: register another project's fingerprint first ---------------------------------------------


def test_a_squatted_fingerprint_does_not_swallow_the_owners_critical_report(monitor: Monitor, url: str) -> None:
    payments, web_app = key_for(monitor, "payments"), key_for(monitor, "web-app")
    squat = reported(post(url, web_app, "web-app", level="warning", fingerprint=SHARED_FINGERPRINT))

    owner = reported(post(url, payments, "payments", risk_level="critical", fingerprint=SHARED_FINGERPRINT))

    assert owner["deduplicated"] is False
    assert owner["incident_id"] != squat["incident_id"]
    assert owner["severity"] == "critical"
    stored = incident(monitor, owner["incident_id"])
    assert (stored.project_id, stored.severity) == ("payments", Severity.critical)
    assert incident(monitor, squat["incident_id"]).occurrence_count == 1


# --- reopen: a resolved incident of another project ---------------------------------------------------


async def test_a_key_cannot_reopen_another_projects_resolved_incident(monitor: Monitor, url: str) -> None:
    payments, web_app = key_for(monitor, "payments"), key_for(monitor, "web-app")
    victim = reported(post(url, payments, "payments", fingerprint=SHARED_FINGERPRINT))
    async with mcp_client(monitor, OPERATOR) as operator:
        await call_ok(
            operator, "resolve_incident", incident_id=victim["incident_id"], resolution_note="Failover completed."
        )

    attack = reported(post(url, web_app, "web-app", fingerprint=SHARED_FINGERPRINT))

    assert attack["recurrence"] is False and attack["deduplicated"] is False
    assert_reveals_nothing_of(attack, victim)
    assert incident(monitor, victim["incident_id"]).status is IncidentStatus.resolved
    # The owner's own recurrence still reopens it.
    again = reported(post(url, payments, "payments", fingerprint=SHARED_FINGERPRINT))
    assert (again["incident_id"], again["recurrence"]) == (victim["incident_id"], True)


# --- project escape: case and whitespace variants -----------------------------------------------------

# Routed to the webhook, which payments may not publish to: escaping the project would escape that rule.
CARD_DATA_EXPOSED = {
    "title": "Card data exposed",
    "source": "ci",
    "event": "ci.deploy.failed",
    "route_tags": ["runtime-failure"],
}
VARIANTS = ["Payments", "PAYMENTS", "payments ", " payments", "payments\t", "payments\n", "payments\u200b"]


@pytest.mark.parametrize("variant", VARIANTS, ids=repr)
async def test_a_project_id_variant_is_refused_over_mcp(monitor: Monitor, variant: str) -> None:
    async with mcp_client(monitor, AGENT) as agent:
        refusal = await call_refused(
            agent,
            "report_incident",
            **CARD_DATA_EXPOSED,
            project_id=variant,
        )

    assert "project_unknown" in refusal or "project_id" in refusal
    assert "payments" in refusal  # the declared ids are named, so the caller can fix the call
    assert variant not in refusal.replace("payments, web-app", "")
    assert incidents(monitor) == []


@pytest.mark.parametrize("variant", VARIANTS, ids=repr)
def test_a_project_id_variant_is_refused_at_intake(monitor: Monitor, url: str, variant: str) -> None:
    response = post(url, key_for(monitor, "payments"), variant)

    assert response.status_code == 422, response.text
    assert "project_unknown" in response.text  # the error's code, whatever the error shape
    assert incidents(monitor) == []


async def test_the_exact_project_id_keeps_its_destination_allowlist(monitor: Monitor) -> None:
    async with mcp_client(monitor, AGENT) as agent:
        answer = await call_ok(
            agent,
            "report_incident",
            **CARD_DATA_EXPOSED,
            project_id="payments",
        )
    decision = preview_route(monitor, AGENT, draft_id=answer["draft_id"])
    assert decision.blocked and any(
        "project 'payments' may publish only to telemetry" in r for r in decision.blocked_reasons
    )


async def test_an_undeclared_project_is_refused(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config())  # no [[projects]] at all
    async with mcp_client(monitor, AGENT) as agent:
        refusal = await call_refused(
            agent, "report_incident", title="x failed", source="ci", event="ci.failed", project_id="payments"
        )
    assert "no projects are declared" in refusal
    assert incidents(monitor) == []


# --- selfmon: a caller cannot pass as the self-monitor -------------------------------------------------


async def test_a_selfmon_fingerprint_is_refused_and_denials_still_page(monitor: Monitor, url: str) -> None:
    reserved = f"selfmon:blocked_call:decide_approval:{AGENT.name}"
    async with mcp_client(monitor, AGENT) as agent:
        refusal = await call_refused(
            agent,
            "report_incident",
            title="Routine note",
            source="ci",
            event="ci.note.failed",
            level="warning",
            fingerprint=reserved,
        )
        denied = await call_refused(
            agent, "decide_approval", approval_id="apr_" + "0" * 16, decision="approve", note="me"
        )
    at_intake = post(url, key_for(monitor, "web-app"), "web-app", fingerprint=reserved)

    assert "fingerprint" in refusal and "reserved" in refusal
    assert at_intake.status_code == 422, at_intake.text
    assert "permission denied" in denied
    [self_incident] = [i for i in incidents(monitor) if i.fingerprint == reserved]
    assert self_incident.severity is Severity.critical
    assert self_incident.reported_by == "system:self-monitor"
    assert self_incident.title.startswith("Blocked call")


async def test_a_self_monitoring_tag_does_not_silence_denials_on_the_callers_incident(monitor: Monitor) -> None:
    reader = principal("reader-agent", "read", "report")
    async with mcp_client(monitor, reader) as agent:
        own = await call_ok(
            agent,
            "report_incident",
            title="Routine note",
            source="ci",
            event="ci.note.failed",
            route_tags=["self-monitoring"],
        )
        await call_refused(agent, "publish_draft", draft_id=own["draft_id"])

    raised = [i for i in incidents(monitor) if i.fingerprint == "selfmon:blocked_call:publish_draft:reader-agent"]
    assert [i.severity for i in raised] == [Severity.critical]


# --- principal scope: reports without a project -------------------------------------------------------


async def test_agents_without_a_project_do_not_share_incidents(monitor: Monitor) -> None:
    report = {"title": "Nightly export failed", "source": "ci", "event": "export.failed", "fingerprint": "export"}
    async with mcp_client(monitor, principal("agent-a", "report", "read")) as first:
        victim = await call_ok(first, "report_incident", **report, risk_level="high")
    async with mcp_client(monitor, principal("agent-b", "report")) as second:
        attack = await call_ok(second, "report_incident", **report)
        scoped = await call_ok(second, "report_incident", **{**report, "fingerprint": victim["fingerprint"]})

    assert victim["fingerprint"] == "principal:agent-a|export"
    for answer in (attack, scoped):
        assert answer["incident_id"] != victim["incident_id"]
        assert_reveals_nothing_of(answer, victim)
    assert incident(monitor, victim["incident_id"]).occurrence_count == 1


def test_principal_names_cannot_forge_another_scope(monitor: Monitor) -> None:
    base = {"title": "Export failed", "source": "ci", "event": "export.failed"}
    victim = report_incident(monitor, principal("a", "report"), IncidentReport(**base, fingerprint="b|c"))
    attack = report_incident(monitor, principal("a|b", "report"), IncidentReport(**base, fingerprint="c"))

    assert attack.incident_id != victim.incident_id
    assert attack.fingerprint == "principal:a%7Cb|c" and victim.fingerprint == "principal:a|b|c"


def test_refusals_store_no_incident_and_audit_without_the_value(monitor: Monitor, url: str) -> None:
    canary = "ghp_" + "A1b2C3d4E5" * 3 + "f6G7h8"
    response = post(url, key_for(monitor, "payments"), canary[:64])

    assert response.status_code == 422
    assert canary[:40] not in response.text
    with monitor.session() as session:
        rows = session.exec(select(AuditEvent)).all()
    assert canary[:40] not in repr(rows)
