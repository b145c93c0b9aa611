"""A repeat at a higher risk escalates: the incident and its draft take the higher severity, and an
approval granted at the old severity no longer lets the draft publish (issue 12).

Over MCP, agent and operator as separate principals; drafts route to the telemetry file (the default
destination), which needs an approval only at high severity and above.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from incident_monitor.service.monitor import Monitor
from support.mcp_helpers import call_ok, call_refused, mcp_client
from support.monitors import AGENT, OPERATOR, MonitorFactory, flow_config

pytestmark = pytest.mark.anyio

WARNING: dict[str, Any] = {
    "title": "Nightly reconciliation drifted",
    "detail": "Ledger totals differ by 3 entries.",
    "source": "ci",
    "event": "ledger.reconcile.failed",
    "level": "warning",
    "risk_category": "tool_policy_review",
}


@pytest.fixture
def monitor(make_monitor: MonitorFactory, webhook_secret: str) -> Monitor:
    return make_monitor(flow_config())


def telemetry_severities(monitor: Monitor) -> list[str]:
    path = Path(monitor.data_dir) / "telemetry.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line)["severity"] for line in lines]


async def approve(agent: Any, operator: Any, draft_id: str) -> dict[str, Any]:
    requested = await call_ok(agent, "request_approval", draft_id=draft_id, reason="On-call must see this.")
    return await call_ok(
        operator,
        "decide_approval",
        approval_id=requested["approval"]["approval_id"],
        decision="approve",
        note="Reviewed the evidence.",
    )


async def test_a_dedupe_at_higher_risk_supersedes_the_approval_and_publishes_at_the_new_severity(
    monitor: Monitor,
) -> None:
    async with mcp_client(monitor, AGENT) as agent, mcp_client(monitor, OPERATOR) as operator:
        first = await call_ok(agent, "report_incident", **WARNING)
        draft_id = first["draft_id"]
        approved = await approve(agent, operator, draft_id)
        assert approved["draft_status"] == "approved"

        escalated = await call_ok(agent, "report_incident", **WARNING, risk_level="critical")

        assert (escalated["deduplicated"], escalated["incident_id"]) == (True, first["incident_id"])
        assert escalated["severity"] == "critical" and escalated["draft_id"] == draft_id
        detail = await call_ok(agent, "get_draft", draft_id=draft_id)
        assert detail["draft"]["severity"] == "critical"
        assert detail["draft"]["status"] == "draft"
        assert detail["draft"]["revision"] == 2
        assert [a["status"] for a in detail["approvals"]] == ["superseded"]
        incident = await call_ok(agent, "get_incident", incident_id=first["incident_id"])
        assert (incident["incident"]["severity"], incident["incident"]["risk_level"]) == ("critical", "critical")

        # The old approval cannot be used; the critical draft needs a new one.
        refusal = await call_refused(agent, "publish_draft", draft_id=draft_id)
        assert "approval" in refusal
        await approve(agent, operator, draft_id)
        published = await call_ok(agent, "publish_draft", draft_id=draft_id)

    assert published["receipt"]["status"] == "published"
    assert telemetry_severities(monitor) == ["critical"]


async def test_a_pending_request_is_superseded_too(monitor: Monitor) -> None:
    async with mcp_client(monitor, AGENT) as agent, mcp_client(monitor, OPERATOR) as operator:
        draft_id = (await call_ok(agent, "report_incident", **WARNING))["draft_id"]
        requested = await call_ok(agent, "request_approval", draft_id=draft_id, reason="Please look.")
        await call_ok(agent, "report_incident", **{**WARNING, "level": "critical"})
        stale = await call_refused(
            operator,
            "decide_approval",
            approval_id=requested["approval"]["approval_id"],
            decision="approve",
            note="Looks fine.",
        )
        detail = await call_ok(agent, "get_draft", draft_id=draft_id)

    assert "superseded, not pending" in stale
    assert (detail["draft"]["status"], detail["draft"]["severity"]) == ("draft", "critical")


async def test_a_recurrence_at_higher_risk_opens_a_draft_at_the_new_severity(monitor: Monitor) -> None:
    async with mcp_client(monitor, AGENT) as agent, mcp_client(monitor, OPERATOR) as operator:
        first = await call_ok(agent, "report_incident", **WARNING)
        published = await call_ok(agent, "publish_draft", draft_id=first["draft_id"])
        assert published["receipt"]["status"] == "published"
        await call_ok(operator, "resolve_incident", incident_id=first["incident_id"], resolution_note="Fixed.")

        again = await call_ok(agent, "report_incident", **WARNING, risk_level="high")

        assert (again["recurrence"], again["severity"]) == (True, "high")
        assert again["draft_id"] != first["draft_id"]
        fresh = await call_ok(agent, "get_draft", draft_id=again["draft_id"])
        assert fresh["draft"]["severity"] == "high"
        assert "approval" in await call_refused(agent, "publish_draft", draft_id=again["draft_id"])


async def test_a_published_draft_is_not_rewritten_an_escalation_gets_a_new_draft(monitor: Monitor) -> None:
    async with mcp_client(monitor, AGENT) as agent:
        first = await call_ok(agent, "report_incident", **WARNING)
        await call_ok(agent, "publish_draft", draft_id=first["draft_id"])

        escalated = await call_ok(agent, "report_incident", **WARNING, risk_level="critical")
        old = await call_ok(agent, "get_draft", draft_id=first["draft_id"])

    assert escalated["draft_id"] != first["draft_id"]
    assert (old["draft"]["severity"], old["draft"]["status"]) == ("medium", "published")


async def test_a_repeat_at_lower_or_equal_risk_changes_nothing(monitor: Monitor) -> None:
    async with mcp_client(monitor, AGENT) as agent, mcp_client(monitor, OPERATOR) as operator:
        first = await call_ok(agent, "report_incident", **WARNING, risk_level="high")
        await approve(agent, operator, first["draft_id"])
        for repeat in ({"risk_level": "low"}, {"risk_level": "high"}, {}):
            again = await call_ok(agent, "report_incident", **WARNING, **repeat)
            assert again["severity"] == "high"
        detail = await call_ok(agent, "get_draft", draft_id=first["draft_id"])

    assert (detail["draft"]["status"], detail["draft"]["revision"]) == ("approved", 1)
    assert [a["status"] for a in detail["approvals"]] == ["approved"]
