"""Authority inventory, deployment cards and the assessment report — over MCP (tools and resources),
the CLI and the services — and a canary secret that appears in none of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import TextResourceContents
from sqlmodel import select

from incident_monitor.config import load_config
from incident_monitor.domain.io import IncidentReport
from incident_monitor.domain.models import ApiToken
from incident_monitor.errors import ConfigError, PermissionDenied
from incident_monitor.policy.scopes import ACTION_SCOPES
from incident_monitor.server.tools import TOOL_ANNOTATIONS, tool_catalog
from incident_monitor.service import intake, tokens
from incident_monitor.service.governance import cards, inventory, posture, probes, report
from incident_monitor.service.monitor import Monitor
from incident_monitor.store.engine import DATABASE_URL_VARIABLE
from support.databases import database_url_env
from support.mcp_helpers import call_ok, call_refused, mcp_client
from support.monitors import AGENT, OPERATOR, WEBHOOK_SECRET_VARIABLE, MonitorFactory, flow_config, new_webhook_secret

pytestmark = pytest.mark.anyio

SCRIPT = Path(sys.executable).parent / "incident-monitor"
CANARY_URL_PART = "canary-hook-path-7f3a"
CANARY_TELEMETRY = "canary-telemetry-91b2.jsonl"


def canary_config() -> dict[str, Any]:
    config = flow_config(f"https://hooks.example.com/{CANARY_URL_PART}?token=abc")
    config["destinations"][0]["allow_insecure_http"] = False
    config["destinations"][1]["path"] = CANARY_TELEMETRY
    config["deployment_cards"] = [
        {
            "kind": "agent",
            "subject": "ci-agent",
            "owner": "CI team",
            "accountable_team": "platform",
            "autonomy_level": "report and publish after approval",
            "data_classification": "internal",
            "escalation": "#incidents channel",
            "review_cadence": "quarterly",
            "residual_risks": ["flaky tests"],
        },
    ]
    return config


@pytest.fixture
def canary(monkeypatch: pytest.MonkeyPatch) -> str:
    """A real webhook secret whose value must never appear in any governance output."""
    secret = new_webhook_secret()
    monkeypatch.setenv(WEBHOOK_SECRET_VARIABLE, secret)
    return secret


@pytest.fixture
def monitor(make_monitor: MonitorFactory, canary: str) -> Monitor:
    return make_monitor(canary_config())


def secrets_of(monitor: Monitor, canary: str, token_secret: str) -> list[str]:
    with monitor.session() as session:
        hashes = list(session.exec(select(ApiToken.token_hash)).all())
    return [canary, token_secret, *hashes, CANARY_URL_PART, CANARY_TELEMETRY, "sk_live_canary"]


def assert_clean(where: str, text: str, forbidden: list[str]) -> None:
    for value in forbidden:
        assert value not in text, f"{where} leaks {value[:12]}…"


def seeded(monitor: Monitor) -> str:
    created = tokens.create_token(monitor, OPERATOR, name="ci-agent", scopes=["read", "report", "publish"])
    tokens.create_token(monitor, OPERATOR, name="old-agent", scopes=["read"])
    tokens.revoke_token(monitor, OPERATOR, "old-agent")
    intake.report_incident(
        monitor,
        AGENT,
        IncidentReport(
            title="Deploy failed",
            source="ci",
            event="ci.deploy.failed",
            detail="api_key=sk_live_canary leaked in the log",
            route_tags=["runtime-failure"],
        ),
    )
    return created.secret


def test_inventory_lists_authority_without_secrets(monitor: Monitor, canary: str) -> None:
    token_secret = seeded(monitor)

    view = inventory.get_authority_inventory(monitor, OPERATOR, tool_catalog())

    assert {t.name for t in view.tools} == set(TOOL_ANNOTATIONS)
    publish = next(t for t in view.tools if t.name == "publish_draft")
    assert (publish.scopes, publish.read_only, publish.open_world) == (["incident_monitor:publish"], False, True)
    assert all(t.scopes == sorted(ACTION_SCOPES[t.name]) for t in view.tools)
    principals = {p.name: p for p in view.principals}
    assert principals["ci-agent"].status == "active"
    assert principals["old-agent"].status == "revoked"
    assert principals["local-agent"].kind == "local-agent"
    assert "incident_monitor:approve" not in principals["local-agent"].scopes
    webhook = next(d for d in view.destinations if d.destination_id == "ops-webhook")
    assert (webhook.kind, webhook.external, webhook.ready, webhook.approval_required_by_default) == (
        "webhook",
        True,
        True,
        True,
    )
    # flow_config allows private networks for the tests' loopback receivers; the inventory shows that flag too.
    assert webhook.policy_flags == {"allow_insecure_http": False, "allow_private_networks": True}
    assert webhook.route_ids == ["runtime-failures", "safety-signals"]
    assert [r.route_id for r in view.routes] == ["runtime-failures", "safety-signals", None]
    assert view.intake_keys == [] and view.outbound_mcp_servers == []  # sections exist before their issues land
    assert view.approval_policies.approver_principals == [OPERATOR.name]
    assert view.sources == ["ci"]
    assert_clean("the inventory", view.model_dump_json(), secrets_of(monitor, canary, token_secret))


async def test_every_governance_output_is_free_of_the_canary(monitor: Monitor, canary: str) -> None:
    token_secret = seeded(monitor)
    forbidden = secrets_of(monitor, canary, token_secret)
    outputs = {
        "inventory": inventory.get_authority_inventory(monitor, OPERATOR, tool_catalog()).model_dump_json(),
        "posture": posture.run_posture_checks(monitor, OPERATOR, tool_catalog()).model_dump_json(),
        "probes": (await probes.run_assessment_probes(monitor, OPERATOR, tool_catalog())).model_dump_json(),
        "cards": cards.build_deployment_cards(monitor, OPERATOR, tool_catalog()).model_dump_json(),
    }
    built = await report.build_assessment_report(monitor, OPERATOR, tool_catalog())
    outputs["report json"] = built.model_dump_json()
    outputs["report markdown"] = built.markdown
    for where, text in outputs.items():
        assert_clean(where, text, forbidden)

    async with mcp_client(monitor, OPERATOR) as client:
        for tool in (
            "get_authority_inventory",
            "run_posture_checks",
            "run_assessment_probes",
            "build_assessment_report",
            "build_deployment_cards",
        ):
            assert_clean(f"MCP {tool}", json.dumps(await call_ok(client, tool)), forbidden)
        for resource in (await client.list_resources()).resources:
            contents = (await client.read_resource(str(resource.uri))).contents
            assert_clean(f"resource {resource.uri}", "".join(getattr(c, "text", "") for c in contents), forbidden)


async def test_the_report_has_evidence_refs_recommendations_and_markdown(
    make_monitor: MonitorFactory, webhook_secret: str
) -> None:
    config = flow_config()
    config["routes"][0]["approval_policy"] = "never"  # a high-risk route without approval
    monitor = make_monitor(config)

    built = await report.build_assessment_report(monitor, OPERATOR, tool_catalog())

    rules = {f.rule_id for f in built.posture.findings}
    assert {"high-risk-route-without-approval", "external-destination-without-approval"} <= rules
    assert all(f.evidence_refs for f in built.posture.findings)
    assert any("route:runtime-failures" in f.evidence_refs for f in built.posture.findings)
    assert built.summary["probes_failed"] == 1  # the high-risk preview probe
    assert any(r.startswith("[probe failed] high-risk-preview-requires-approval") for r in built.recommendations)
    assert any(r.startswith("[high] high-risk-route-without-approval") for r in built.recommendations)
    md = built.markdown
    for heading in (
        "# Incident Monitor assessment report",
        "## Recommendations",
        "## Posture findings",
        "## Assessment probes (dry run)",
        "## Authority inventory",
        "### Tools",
        "### Destinations",
        "### Routes",
        "### Outbound MCP servers",
        "### Intake keys",
        "## Deployment cards",
    ):
        assert heading in md, heading
    assert "| high | high-risk-route-without-approval |" in md
    assert "Failed checks:" in md


async def test_deployment_cards_cover_agents_sources_and_the_monitor(monitor: Monitor) -> None:
    seeded(monitor)
    tokens.create_token(monitor, OPERATOR, name="oncall", scopes=["read", "approve"])  # an operator: no card
    tokens.create_token(monitor, OPERATOR, name="hybrid", scopes=["publish", "approve"])  # acts as an agent too

    result = cards.build_deployment_cards(monitor, OPERATOR, tool_catalog())

    by_id = {c.card_id: c for c in result.cards}
    assert set(by_id) == {
        "agent:local-agent",
        "agent:ci-agent",
        "agent:hybrid",
        "source:ci",
        "monitor:incident-monitor",
    }
    assert "holds both publish and approve" in by_id["agent:hybrid"].residual_risks
    ci_agent = by_id["agent:ci-agent"]
    assert (ci_agent.owner, ci_agent.accountable_team, ci_agent.review_cadence) == ("CI team", "platform", "quarterly")
    assert ci_agent.missing_fields == []
    assert ci_agent.authority.tools == [
        "get_status",
        "report_incident",
        "list_incidents",
        "get_incident",
        "list_drafts",
        "get_draft",
        "publish_draft",
        "list_receipts",
        "list_sources",
        "get_code_change",
        "list_code_changes",
    ]
    assert ci_agent.authority.destinations == ["ops-webhook", "telemetry"]
    assert "decide_approval" in ci_agent.prohibited_actions
    assert "flaky tests" in ci_agent.residual_risks
    assert "approvers: operator" in ci_agent.approval
    source = by_id["source:ci"]
    assert source.authority.tools == ["report_incident"]
    assert "publish" in source.prohibited_actions
    local = by_id["agent:local-agent"]
    assert any("stdio has no transport authentication" in x for x in local.known_limitations)
    assert {f.evidence_refs[0] for f in result.findings} == {
        "card:agent:local-agent",
        "card:agent:hybrid",
        "card:source:ci",
        "card:monitor:incident-monitor",
    }


async def test_governance_tools_and_resources_are_for_the_governance_scope_only(monitor: Monitor) -> None:
    async with mcp_client(monitor, AGENT) as agent:
        assert not {"get_authority_inventory", "run_posture_checks"} & {
            t.name for t in (await agent.list_tools()).tools
        }
        assert (await agent.list_resources()).resources == []
        refusal = await call_refused(agent, "get_authority_inventory")
        assert "incident_monitor:governance" in refusal
        with pytest.raises(
            Exception,
            match="insufficient_scope: permission denied: get_authority_inventory needs scope "
            "incident_monitor:governance",
        ):
            await agent.read_resource("incident-monitor://inventory/destinations")

    async with mcp_client(monitor, OPERATOR) as operator:
        uris = {str(r.uri) for r in (await operator.list_resources()).resources}
        assert {
            "incident-monitor://inventory",
            "incident-monitor://inventory/tools",
            "incident-monitor://inventory/destinations",
            "incident-monitor://inventory/routes",
        } <= uris
        [contents] = (await operator.read_resource("incident-monitor://inventory/destinations")).contents
        assert isinstance(contents, TextResourceContents)
        data = json.loads(contents.text)
        assert [d["destination_id"] for d in data["destinations"]] == ["ops-webhook", "telemetry"]

    with pytest.raises(PermissionDenied):
        inventory.get_authority_inventory(monitor, AGENT, tool_catalog())


def run_cli(monitor: Monitor, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("INCIDENT_MONITOR_") or k in (WEBHOOK_SECRET_VARIABLE, DATABASE_URL_VARIABLE)
    }
    return subprocess.run(
        [str(SCRIPT), *args, "--data-dir", str(monitor.data_dir), "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


def test_cli_inventory_posture_and_report(monitor: Monitor, canary: str, tmp_path: Path) -> None:
    token_secret = seeded(monitor)
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[[destinations]]
id = "ops-webhook"
kind = "webhook"
url = "https://hooks.example.com/{CANARY_URL_PART}"
secret = "env:{WEBHOOK_SECRET_VARIABLE}"

[[destinations]]
id = "telemetry"
kind = "telemetry"
path = "{CANARY_TELEMETRY}"

[[routes]]
id = "runtime-failures"
destination_id = "ops-webhook"
[routes.match]
route_tags = ["runtime-failure"]

[default_destination]
destination_id = "telemetry"
""",
        encoding="utf-8",
    )
    forbidden = secrets_of(monitor, canary, token_secret)

    text = run_cli(monitor, config, "inventory")
    as_json = run_cli(monitor, config, "inventory", "--json")
    posture_run = run_cli(monitor, config, "posture")
    markdown = run_cli(monitor, config, "report", "--format", "md")
    probes_run = run_cli(monitor, config, "probes")

    assert text.returncode == 0, text.stderr
    assert "publish_draft" in text.stdout and "ops-webhook" in text.stdout and "ci-agent" in text.stdout
    assert json.loads(as_json.stdout)["destinations"][0]["destination_id"] == "ops-webhook"
    assert posture_run.returncode == 1  # cards are missing: a high finding (the monitor's card)
    assert "deployment-card-incomplete" in posture_run.stdout
    assert markdown.returncode == 0, markdown.stderr
    assert markdown.stdout.startswith("# Incident Monitor assessment report")
    assert probes_run.returncode == 0, probes_run.stdout + probes_run.stderr
    for where, done in (
        ("inventory", text),
        ("inventory --json", as_json),
        ("posture", posture_run),
        ("report", markdown),
        ("probes", probes_run),
    ):
        assert_clean(f"incident-monitor {where}", done.stdout + done.stderr, forbidden)


@pytest.mark.parametrize(
    ("cards_toml", "message"),
    [
        (
            '[[deployment_cards]]\nkind = "agent"\nsubject = "ci"\n' * 2,
            "deployment_cards: one card per kind and subject; repeated: agent:ci",
        ),
        ('[[deployment_cards]]\nkind = "agent"\nsubject = "ci"\nownr = "x"\n', "deployment_cards[0].ownr: unknown key"),
        ('[[deployment_cards]]\nkind = "robot"\n', "deployment_cards[0].kind: Input should be 'agent', 'source'"),
        ("[self_monitoring]\nrepeated_failure_threshold = 1\n", "self_monitoring.repeated_failure_threshold"),
    ],
)
def test_bad_governance_config_names_the_key(tmp_path: Path, cards_toml: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(cards_toml, encoding="utf-8")

    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert message in raised.value.message


async def test_over_stdio_an_auditor_token_gets_the_evidence_and_the_local_agent_does_not(
    monitor: Monitor, canary: str, tmp_path: Path
) -> None:
    auditor = tokens.create_token(monitor, OPERATOR, name="auditor", scopes=["read", "governance"])
    config = tmp_path / "stdio-config.toml"
    config.write_text(
        f'[[destinations]]\nid = "ops-webhook"\nkind = "webhook"\nurl = "https://hooks.example.com/{CANARY_URL_PART}"\n'
        f'secret = "env:{WEBHOOK_SECRET_VARIABLE}"\n[default_destination]\ndestination_id = "ops-webhook"\n',
        encoding="utf-8",
    )
    base_env = {"PATH": os.environ.get("PATH", ""), WEBHOOK_SECRET_VARIABLE: canary, **database_url_env()}
    forbidden = [canary, auditor.secret, CANARY_URL_PART]

    def params(env: dict[str, str]) -> StdioServerParameters:
        args = ["serve", "--transport", "stdio", "--config", str(config), "--data-dir", str(monitor.data_dir)]
        return StdioServerParameters(command=str(SCRIPT), args=args, env=env)

    with (tmp_path / "stderr.log").open("a", encoding="utf-8") as log, anyio.fail_after(120):
        async with Client(stdio_client(params(base_env | {"INCIDENT_MONITOR_TOKEN": auditor.secret}), errlog=log)) as c:
            view = await call_ok(c, "get_authority_inventory")
            built = await call_ok(c, "build_assessment_report")
            [routes] = (await c.read_resource("incident-monitor://inventory/routes")).contents
        async with Client(stdio_client(params(base_env), errlog=log)) as local_agent:
            assert (await local_agent.list_resources()).resources == []
            refusal = await call_refused(local_agent, "run_posture_checks")

    assert [d["destination_id"] for d in view["destinations"]] == ["ops-webhook"]
    assert built["markdown"].startswith("# Incident Monitor assessment report")
    assert json.loads(getattr(routes, "text", ""))["routes"][0]["is_default"] is True
    assert "incident_monitor:governance" in refusal
    for where, text in (("inventory", json.dumps(view)), ("report", json.dumps(built))):
        assert_clean(f"stdio {where}", text, forbidden)
