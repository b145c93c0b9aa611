"""The whole governed flow by real MCP clients over real sockets: Streamable HTTP and legacy SSE.

The agent and the operator each connect with their own bearer token; the operator approves over
the same transport, so the approval really comes from a different principal. Publishing reaches a
real signature-verifying webhook receiver on 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx2
import pytest
from mcp import MCPError

from incident_monitor.policy.principal import local_operator
from incident_monitor.policy.scopes import DEFAULT_AGENT_SCOPES, OPERATOR_SCOPES
from incident_monitor.service import tokens
from incident_monitor.service.audit_queries import verify_audit
from incident_monitor.service.monitor import Monitor
from support.http_helpers import Transport, http_client, http_server
from support.mcp_helpers import call_ok, call_refused
from support.monitors import FakeClock, MonitorFactory, flow_config
from support.receivers import WebhookReceiver

pytestmark = pytest.mark.anyio

RUNTIME_FAILURE: dict[str, Any] = {
    "title": "Agent run failed during Linear sync",
    "detail": "Could not resolve the Linear MCP capability. Authorization: Bearer sk_live_abcdef0123456789",
    "source": "automation_v2",
    "event": "automation_v2.run.failed",
    "level": "error",
    "route_tags": ["runtime-failure"],
}


@pytest.fixture
def monitor(make_monitor: MonitorFactory, receiver: WebhookReceiver) -> Monitor:
    return make_monitor(flow_config(receiver.url))


def issue(monitor: Monitor, name: str, scopes: frozenset[str]) -> str:
    return tokens.create_token(monitor, local_operator(), name=name, scopes=sorted(scopes)).secret


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
async def test_the_governed_flow_over_http(
    monitor: Monitor, receiver: WebhookReceiver, clock: FakeClock, transport: Transport
) -> None:
    agent_token = issue(monitor, "remote-agent", DEFAULT_AGENT_SCOPES)
    operator_token = issue(monitor, "remote-operator", OPERATOR_SCOPES)
    with http_server(monitor) as url:
        async with (
            http_client(url, agent_token, transport) as agent,
            http_client(url, operator_token, transport) as operator,
        ):
            status = await call_ok(agent, "get_status")
            assert status["caller"]["principal"] == "remote-agent"
            assert status["readiness"]["publish_ready"]

            preview = await call_ok(
                agent, "preview_route", route_tags=["runtime-failure"], level="error", source="automation_v2"
            )
            assert (preview["destination_id"], preview["approval_required"]) == ("ops-webhook", True)

            reported = await call_ok(agent, "report_incident", **RUNTIME_FAILURE)
            draft_id, incident_id = reported["draft_id"], reported["incident_id"]
            assert "detail" in reported["redacted_fields"]

            drafts = await call_ok(agent, "list_drafts", incident_id=incident_id)
            assert [d["draft_id"] for d in drafts["drafts"]] == [draft_id]
            await call_ok(agent, "triage_draft", draft_id=draft_id)

            refusal = await call_refused(agent, "publish_draft", draft_id=draft_id)
            assert f"call request_approval with draft_id={draft_id}" in refusal
            # The refusal left a blocked receipt; receipts are ordered by time, so let time pass.
            clock.advance(seconds=1)
            # The agent cannot approve its own request: it lacks the scope, and the tool is not even listed.
            requested = await call_ok(agent, "request_approval", draft_id=draft_id, reason="Every run fails.")
            approval_id = requested["approval"]["approval_id"]
            self_approval = await call_refused(
                agent, "decide_approval", approval_id=approval_id, decision="approve", note="me"
            )
            assert self_approval.startswith("insufficient_scope:") and "incident_monitor:approve" in self_approval

            decided = await call_ok(
                operator, "decide_approval", approval_id=approval_id, decision="approve", note="Evidence checked."
            )
            assert decided["approval"]["decided_by"] == "remote-operator"
            assert decided["approval"]["requested_by"] == "remote-agent"

            published = await call_ok(agent, "publish_draft", draft_id=draft_id)
            receipt = published["receipt"]
            assert receipt["status"] == "published" and receipt["published_by"] == "remote-agent"
            again = await call_ok(agent, "publish_draft", draft_id=draft_id)
            assert again["reused"] is True and again["receipt"]["receipt_id"] == receipt["receipt_id"]

            receipts = await call_ok(agent, "list_receipts", draft_id=draft_id)
            by_status = {r["status"]: r["receipt_id"] for r in receipts["receipts"]}
            assert by_status == {"blocked": by_status["blocked"], "published": receipt["receipt_id"]}

            resolved = await call_ok(
                operator, "resolve_incident", incident_id=incident_id, resolution_note="Capability restored."
            )
            assert resolved["status"] == "resolved" and resolved["resolved_by"] == "remote-operator"

    [delivery] = receiver.deliveries
    assert receiver.rejected == []
    assert delivery.webhook_id == receipt["idempotency_key"]
    assert b"sk_live_abcdef0123456789" not in delivery.body
    assert verify_audit(monitor, local_operator()).ok


async def test_a_token_revoked_mid_session_loses_access_on_its_next_request(monitor: Monitor) -> None:
    secret = issue(monitor, "short-lived", DEFAULT_AGENT_SCOPES)
    with http_server(monitor) as url:
        async with http_client(url, secret) as agent:
            await call_ok(agent, "get_status")
            tokens.revoke_token(monitor, local_operator(), "short-lived")
            with anyio.fail_after(60), pytest.raises(MCPError):
                await agent.call_tool("get_status", {})
        # What the client was told, on the wire: 401 saying why.
        response = httpx2.post(f"{url}/mcp", json={}, headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 401
    assert "token 'short-lived' was revoked" in response.json()["error_description"]
