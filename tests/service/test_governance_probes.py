"""Assessment probes: each passes on sound controls and fails when the control is broken — and the
whole run is a dry run: no row written (but its own audit row), no destination adapter called."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import SQLModel, func, select, text

from incident_monitor.destinations.base import DestinationAdapter
from incident_monitor.destinations.mcp_tool import McpToolAdapter
from incident_monitor.destinations.settings import McpToolConfig
from incident_monitor.destinations.telemetry import TelemetryAdapter
from incident_monitor.destinations.webhook import WebhookAdapter
from incident_monitor.domain.io import IncidentReport
from incident_monitor.domain.readiness import Readiness
from incident_monitor.errors import InvalidInput, PermissionDenied
from incident_monitor.policy import route_decision
from incident_monitor.server.tools import tool_catalog
from incident_monitor.service import intake, publishing, route_preview
from incident_monitor.service.governance import probes
from incident_monitor.service.governance.inventory import (
    AuthorityInventory,
    IntakeKeyEntry,
    collect_inventory,
)
from incident_monitor.service.monitor import Monitor
from support.monitors import AGENT, OPERATOR, MonitorFactory, flow_config

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _secret(webhook_secret: str) -> None:
    """The webhook destination is ready."""


def inventory_of(monitor: Monitor) -> AuthorityInventory:
    with monitor.session() as session:
        return collect_inventory(monitor, session, tool_catalog())


async def run(monitor: Monitor, probe_id: str, inventory: AuthorityInventory | None = None) -> probes.ProbeResult:
    return await probes.PROBES[probe_id](monitor, inventory or inventory_of(monitor))


def failed_checks(result: probes.ProbeResult) -> list[str]:
    return [c.name for c in result.checks if c.passed is False]


def row_counts(monitor: Monitor) -> dict[str, int]:
    with monitor.session() as session:
        return {
            name: session.exec(select(func.count()).select_from(text(name))).one()  # type: ignore[call-overload]
            for name in SQLModel.metadata.tables
        }


async def test_every_probe_passes_on_the_example_controls(make_monitor: MonitorFactory) -> None:
    report = await probes.run_assessment_probes(make_monitor(flow_config()), OPERATOR, tool_catalog())

    statuses = {p.probe_id: p.status for p in report.probes}
    assert statuses == {
        "approval-required-enforced": "passed",
        "high-risk-preview-requires-approval": "passed",
        "unready-destination-fails-closed": "passed",
        "intake-key-cannot-read-preview-publish": "passed",
        "outbound-mcp-allowlist-enforced": "not_applicable",  # no MCP-tool destination configured
        "webhook-url-policy": "passed",
    }
    assert report.counts == {"passed": 5, "failed": 0, "not_applicable": 1}
    assert report.dry_run is True


async def test_probes_are_a_dry_run(make_monitor: MonitorFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monitor = make_monitor(flow_config())
    draft_id = intake.report_incident(
        monitor, AGENT, IncidentReport(title="Existing failure", source="ci", event="ci.smoke.failed")
    ).draft_id
    assert draft_id is not None
    called: list[str] = []

    async def spy(self: DestinationAdapter, *args: Any, **kwargs: Any) -> Any:
        called.append(self.id)
        raise AssertionError("a probe reached a destination adapter")

    for adapter in (WebhookAdapter, TelemetryAdapter):
        monkeypatch.setattr(adapter, "publish", spy)
        monkeypatch.setattr(adapter, "_deliver", spy)
    before = row_counts(monitor)

    report = await probes.run_assessment_probes(monitor, OPERATOR, tool_catalog())

    assert called == []
    after = row_counts(monitor)
    assert after == before | {"audit_events": before["audit_events"] + 1}  # only the probe call's own row
    assert not (monitor.data_dir / "telemetry.jsonl").exists()
    assert report.counts["failed"] == 0


async def test_probes_need_the_governance_scope(make_monitor: MonitorFactory) -> None:
    with pytest.raises(PermissionDenied, match="incident_monitor:governance"):
        await probes.run_assessment_probes(make_monitor(flow_config()), AGENT, tool_catalog())


async def test_unknown_probe_is_refused_naming_the_known_ones(make_monitor: MonitorFactory) -> None:
    with pytest.raises(InvalidInput, match=r"probes: 1 unknown probe id.*approval-required-enforced") as refused:
        await probes.run_assessment_probes(make_monitor(flow_config()), OPERATOR, tool_catalog(), probes=["nope"])
    assert "nope" not in str(refused.value)  # a caller's text is never repeated


async def test_approval_probe_fails_when_the_gate_lets_a_draft_through(
    make_monitor: MonitorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monitor = make_monitor(flow_config())
    monkeypatch.setattr(publishing, "_approval_gate", lambda *args: None)  # a broken approval gate

    result = await run(monitor, "approval-required-enforced")

    assert result.status == "failed"
    assert "publish without approval via route runtime-failures" in failed_checks(result)
    assert result.recommendation


async def test_high_risk_preview_probe_fails_for_a_never_route(make_monitor: MonitorFactory) -> None:
    config = flow_config()
    config["routes"][0]["approval_policy"] = "never"

    result = await run(make_monitor(config), "high-risk-preview-requires-approval")

    assert result.status == "failed"
    assert failed_checks(result) == ["critical preview via route runtime-failures"]


async def test_unready_probe_fails_when_routing_fails_open(
    make_monitor: MonitorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = route_decision.decide_route

    def fail_open(*args: Any) -> route_decision.RouteDecision:
        return real(*args).model_copy(update={"blocked": False, "blocked_reasons": []})

    monkeypatch.setattr(route_preview, "decide_route", fail_open)
    result = await run(make_monitor(flow_config()), "unready-destination-fails-closed")

    assert result.status == "failed"
    assert set(failed_checks(result)) == {
        "publish to ops-webhook while not ready (via route runtime-failures)",
        "publish to telemetry while not ready (via the default destination policy)",
    }


async def test_intake_key_probe_fails_for_a_key_that_can_read(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config())
    inventory = inventory_of(monitor)
    keys = [
        IntakeKeyEntry(
            key_id="imk_ok", project_id="shop", source_id="ci", scopes=["incident_monitor:report"], status="active"
        ),
        IntakeKeyEntry(
            key_id="imk_wide",
            project_id="shop",
            source_id="ci",
            scopes=["incident_monitor:report", "incident_monitor:read"],
            status="active",
        ),
    ]

    result = await run(
        monitor, "intake-key-cannot-read-preview-publish", inventory.model_copy(update={"intake_keys": keys})
    )

    assert result.status == "failed"
    assert set(failed_checks(result)) == {
        f"intake-key:imk_wide calls {action}"
        for action in ("get_status", "list_incidents", "get_incident", "list_drafts", "get_draft", "list_receipts")
    }
    assert result.evidence_refs == ["intake_key:imk_ok", "intake_key:imk_wide"]


def mcp_tool_destination(destination_id: str, allowed_tools: list[str]) -> dict[str, Any]:
    """An MCP-tool destination as configured (never started by a probe: readiness and rules only)."""
    return {
        "id": destination_id,
        "kind": "mcp_tool",
        "server": "memory",
        "command": "mcp-server-memory",
        "tool": "create_entities",
        "allowed_tools": allowed_tools,
        "arguments": {"entities": "$draft.title"},
    }


async def test_outbound_mcp_allowlist_probe(make_monitor: MonitorFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    config = flow_config()
    config["destinations"] += [
        mcp_tool_destination("listed", ["create_entities"]),
        mcp_tool_destination("unlisted", []),
    ]
    monitor = make_monitor(config)

    result = await run(monitor, "outbound-mcp-allowlist-enforced")

    assert result.status == "failed"
    assert result.evidence_refs == ["outbound_mcp:listed", "outbound_mcp:unlisted"]
    assert failed_checks(result) == ["unlisted has a tool allowlist", "unlisted's configured tool is on its allowlist"]

    # The probe asks the rule the adapter's delivery path applies: a rule that lets any tool through fails it.
    monkeypatch.setattr(McpToolConfig, "allows_tool", lambda self, name: True)
    assert McpToolAdapter(monitor.config.destinations[-1], data_dir=monitor.data_dir).is_tool_allowed("anything")
    broken = await run(monitor, "outbound-mcp-allowlist-enforced")
    assert "listed refuses a tool not on the allowlist" in failed_checks(broken)


async def test_webhook_url_policy_probe(make_monitor: MonitorFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monitor = make_monitor(flow_config())
    result = await run(monitor, "webhook-url-policy")

    assert result.status == "passed"
    http = result.checks[0]
    assert (http.name, http.passed) == ("plain http:// target", True)
    assert "https://" in http.observed
    private = result.checks[1:]
    assert private and all(c.passed is True for c in private)
    assert all("allow_private_networks" in c.observed or "metadata" in c.observed for c in private)

    monkeypatch.setattr(WebhookAdapter, "readiness", lambda self: Readiness(ready=True))  # a policy that allows http
    broken = await run(monitor, "webhook-url-policy")
    # A policy that accepts everything fails every check: http and each private target.
    assert failed_checks(broken) == [c.name for c in result.checks]


async def test_probes_do_not_write_to_the_data_dir(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config())
    files_before = sorted(p.name for p in monitor.data_dir.iterdir())

    await probes.run_assessment_probes(monitor, OPERATOR, tool_catalog())

    assert sorted(p.name for p in monitor.data_dir.iterdir()) == files_before
