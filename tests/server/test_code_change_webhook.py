"""The coding-agent platform's way back in, on the HTTP app (issue 15, seed 002): the status webhook (Standard
Webhooks signatures under the per-launch secret, idempotent and out-of-order safe, 200 for runs we no longer
track, 401 audited for a bad signature) and the background poller — over real sockets, the reference platform
signing."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import anyio
import httpx2
import pytest
from sqlmodel import select
from standardwebhooks import Webhook

from incident_monitor.domain.code_change import CodeChangeRun, launch_secret, webhook_key
from incident_monitor.domain.models import AuditEvent, Incident
from incident_monitor.server.code_change_webhook import WEBHOOK_PATH, poller
from support.coding_agent import World

pytestmark = pytest.mark.anyio
WorldFactory = Callable[..., World]
PR_URL = "https://github.example/acme/shop/pull/1"


def signed(secret: str, body: bytes, *, at: datetime | None = None, message_id: str = "msg_1") -> dict[str, str]:
    at = at or datetime.now(UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, at, body.decode()),
        "content-type": "application/json",
    }


def webhook_url(world: World, run_id: str) -> str:
    callback = world.monitor.config.destination("coding-agent").callback_base_url  # type: ignore[union-attr]
    return callback + WEBHOOK_PATH.format(run_id=run_id)


def audit_rows(world: World, action: str) -> list[AuditEvent]:
    with world.monitor.session() as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.action == action)).all())


async def test_a_signed_finish_puts_the_pr_on_the_receipt_and_the_incident(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world()
    incident_id, run_id, receipt = await world.launch()

    world.platform.finish("run-0001")

    assert world.platform.webhooks_sent == [("run-0001", 200)]
    run = world.run(run_id)
    assert run.status == "finished" and run.pr_url == PR_URL and run.branch == "agent/run-0001"
    assert world.receipt(receipt.receipt_id).external_url == PR_URL
    with world.monitor.session() as session:
        incident = session.get(Incident, incident_id)
        assert incident is not None and f"pull_request:{PR_URL}" in incident.evidence_refs
    assert world.polls("run-0001") == []  # the webhook alone did it
    [ended] = audit_rows(world, "code_change.status")
    assert "via webhook" in ended.reasons[0]


async def test_duplicate_and_reordered_webhooks_are_harmless(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world(reorder_webhooks=True)
    _, run_id, _ = await world.launch()
    world.platform.progress("run-0001", "Reproduced the crash")
    world.platform.finish("run-0001")  # sends finished twice, then the older running twice

    assert [status for _, status in world.platform.webhooks_sent] == [200, 200, 200, 200]
    run = world.run(run_id)
    assert run.status == "finished" and run.summary.startswith("Opened a draft PR")
    assert len(audit_rows(world, "code_change.status")) == 1


async def test_an_older_summary_never_overwrites_a_newer_one(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world()
    _, run_id, _ = await world.launch()
    secret = world.launches()[0].body["webhook"]["secret"]
    now = datetime.now(UTC)
    newer = json.dumps({"status": "running", "summary": "Tests pass"}).encode()
    older = json.dumps({"status": "running", "summary": "Reproduced the crash"}).encode()

    for body, at, message in ((newer, now, "msg_b"), (older, now - timedelta(seconds=30), "msg_a")):
        answer = httpx2.post(
            webhook_url(world, run_id), content=body, headers=signed(secret, body, at=at, message_id=message)
        )
        assert answer.status_code == 200
    assert world.run(run_id).summary == "Tests pass"


async def test_a_forged_signature_is_refused_and_audited(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world()
    _, run_id, _ = await world.launch()
    run = world.platform.runs["run-0001"]
    body = json.dumps({"status": "finished", "pr_url": "https://evil.example/pr/1", "summary": "x"}).encode()
    forged = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="

    assert world.platform.send_webhook(run, body, secret=forged) == 401
    assert world.run(run_id).status == "running"
    [denied] = audit_rows(world, "code_change_webhook")
    assert denied.decision.value == "deny" and denied.principal == "system:code-change-webhook"
    assert forged not in denied.model_dump_json()


async def test_another_runs_secret_does_not_sign_for_this_run(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world()
    _, first, _ = await world.launch()
    _, second, _ = await world.launch()
    second_secret = world.launches()[1].body["webhook"]["secret"]
    body = json.dumps({"status": "finished", "pr_url": PR_URL, "summary": "done"}).encode()

    answer = httpx2.post(webhook_url(world, first), content=body, headers=signed(second_secret, body))
    assert answer.status_code == 401
    assert world.run(first).status == "running" and world.run(second).status == "running"


async def test_runs_we_no_longer_track_get_200(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world()
    body = json.dumps({"status": "running", "summary": "hi"}).encode()
    secret = launch_secret(webhook_key(world.monitor.data_dir), "ccr_gone")

    answer = httpx2.post(webhook_url(world, "ccr_gone"), content=body, headers=signed(secret, body))

    assert answer.status_code == 200
    with world.monitor.session() as session:
        assert session.exec(select(CodeChangeRun)).all() == []


async def test_a_late_webhook_after_the_end_changes_nothing(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world()
    _, run_id, receipt = await world.launch()
    world.platform.finish("run-0001")
    run = world.platform.runs["run-0001"]
    late = json.dumps({"status": "error", "summary": "crashed after all"}).encode()

    assert world.platform.send_webhook(run, late) == 200
    assert world.run(run_id).status == "finished"
    assert world.receipt(receipt.receipt_id).external_url == PR_URL


async def test_oversized_and_malformed_bodies_are_refused(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world()
    _, run_id, _ = await world.launch()
    secret = world.launches()[0].body["webhook"]["secret"]
    url = webhook_url(world, run_id)

    huge = json.dumps({"status": "running", "summary": "x" * 70_000}).encode()
    assert httpx2.post(url, content=huge, headers=signed(secret, huge)).status_code == 413
    not_a_status = json.dumps({"status": "paused"}).encode()
    assert httpx2.post(url, content=not_a_status, headers=signed(secret, not_a_status)).status_code == 400
    assert world.run(run_id).status == "running"


async def test_the_webhook_needs_no_bearer_token_but_the_mcp_endpoint_still_does(
    coding_agent_world: WorldFactory,
) -> None:
    world = coding_agent_world()
    _, run_id, _ = await world.launch()
    base = webhook_url(world, run_id).split("/incident-monitor/")[0]
    assert httpx2.post(f"{base}/mcp", json={}).status_code == 401


async def test_the_background_poller_finishes_a_run_whose_webhooks_were_dropped(
    coding_agent_world: WorldFactory,
) -> None:
    world = coding_agent_world(webhooks=False)
    _, run_id, _ = await world.launch()
    world.platform.finish("run-0001")

    async with poller(world.monitor, tick_seconds=0.01):
        with anyio.fail_after(60):  # a bound on a wait, not a speed assertion
            while world.run(run_id).status == "running":
                await anyio.sleep(0.01)
    assert world.run(run_id).status == "finished"
    assert len(world.polls("run-0001")) == 1  # polled once; then not due for 120 s on the fake clock
