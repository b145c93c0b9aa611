"""The five code-change tools over MCP (issue 15): an agent holding ``code_change`` requests a change, an operator
approves it, ``publish_draft`` launches it on the reference platform, the read tools follow it, and a stop ends
it; the default agent sees only the read tools."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from incident_monitor.policy.scopes import DEFAULT_AGENT_SCOPES
from support.coding_agent import REQUESTER, World
from support.mcp_helpers import call_ok, call_refused, mcp_client
from support.monitors import AGENT, OPERATOR

pytestmark = pytest.mark.anyio
WorldFactory = Callable[..., World]
CODE_CHANGE_TOOLS = {
    "request_code_change",
    "follow_up_code_change",
    "stop_code_change",
    "get_code_change",
    "list_code_changes",
}


async def test_request_approve_launch_follow_and_stop_over_mcp(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world()
    incident_id = world.incident()
    async with mcp_client(world.monitor, REQUESTER) as agent, mcp_client(world.monitor, OPERATOR) as operator:
        requested = await call_ok(
            agent, "request_code_change", incident_id=incident_id, repository="acme/shop", instructions="Fix it"
        )
        run_id, draft_id = requested["run_id"], requested["draft_id"]
        refused = await call_refused(agent, "publish_draft", draft_id=draft_id)
        assert refused.startswith("approval_required: ") and world.launches() == []

        asked = await call_ok(agent, "request_approval", draft_id=draft_id, reason="the checkout crash")
        await call_ok(
            operator, "decide_approval", approval_id=asked["approval"]["approval_id"], decision="approve", note="ok"
        )
        published = await call_ok(agent, "publish_draft", draft_id=draft_id)
        assert published["receipt"]["external_id"] == "run-0001"

        running = await call_ok(agent, "get_code_change", run_id=run_id)
        assert running["status"] == "running" and running["incident_id"] == incident_id
        listed = await call_ok(agent, "list_code_changes", incident_id=incident_id)
        assert [(c["run_id"], c["status"]) for c in listed["code_changes"]] == [(run_id, "running")]

        world.platform.progress("run-0001", "Reproduced the crash")
        assert (await call_ok(agent, "get_code_change", run_id=run_id))["summary"] == "Reproduced the crash"
        stopped = await call_ok(agent, "stop_code_change", run_id=run_id)
        assert stopped["status"] == "stopped" and world.platform.runs["run-0001"].stopped

        gone = await call_refused(agent, "get_code_change", run_id="ccr_" + "0" * 16)
        assert gone.startswith("not_found: run_id: ") and "list_code_changes" in gone


async def test_the_default_agent_reads_code_changes_but_cannot_request_them(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world(webhooks=False)
    assert "incident_monitor:code_change" not in DEFAULT_AGENT_SCOPES
    async with mcp_client(world.monitor, AGENT) as agent:
        listed = {tool.name for tool in (await agent.list_tools()).tools}
        assert listed & CODE_CHANGE_TOOLS == {"get_code_change", "list_code_changes"}
        refusal = await call_refused(
            agent, "request_code_change", incident_id=world.incident(), repository="acme/shop", instructions="x"
        )
    assert refusal.startswith("insufficient_scope: ") and "incident_monitor:code_change" in refusal
