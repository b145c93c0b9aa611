"""Governed code-change delegation (issue 15) against the reference platform over real sockets.

The platform (examples/coding_agent_platform.py) listens on 127.0.0.1; the monitor's HTTP app serves the webhook
on another port; status arrives by signed webhook or by the poller (driven by hand with the fake clock).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlmodel import select
from standardwebhooks import Webhook

from incident_monitor.config import MonitorConfig
from incident_monitor.domain.code_change import INTERFACE_VERSION, CodeChangeRun, launch_secret, webhook_key
from incident_monitor.domain.io import IncidentReport
from incident_monitor.domain.models import AuditEvent, Incident, Receipt
from incident_monitor.errors import ApprovalRequired, InsufficientScope, PublishBlocked
from incident_monitor.policy.principal import local_operator
from incident_monitor.server.http_app import bind_socket
from incident_monitor.service import approvals, code_change_status, code_changes, destination_calls, intake, publishing
from incident_monitor.service.code_change_brief import MAX_BRIEF_CHARS
from incident_monitor.service.monitor import Monitor
from support.coding_agent_platform import CodingAgentPlatform
from support.http_helpers import http_server
from support.monitors import FakeClock, MonitorFactory, principal

TOKEN_VARIABLE = "CODING_AGENT_TOKEN"
TOKEN = "platform-token-9f8e7d6c5b4a39281706"
CANARY = "ghp_" + "C4n4ryT0k3nAbCdEfGhIjKlMnOpQrStUvWx12"
REQUESTER = principal("responder", "read", "report", "code_change", "approval_request", "publish")
OPERATOR = local_operator()
pytestmark = pytest.mark.anyio


def agent_config(platform_url: str, callback: str | None, **overrides: Any) -> dict[str, Any]:
    destination: dict[str, Any] = {
        "id": "coding-agent",
        "kind": "coding_agent",
        "base_url": platform_url,
        "token": f"env:{TOKEN_VARIABLE}",
        "display_name": "Reference agent",
        "allow_insecure_http": True,
        "allow_private_networks": True,
        "callback_base_url": callback,
        "max_attempts": 1,
    }
    destination.update(overrides)
    return {
        "destinations": [destination, {"id": "telemetry", "kind": "telemetry"}],
        "default_destination": {"destination_id": "telemetry"},
    }


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, TOKEN)


class World:
    def __init__(self, monitor: Monitor, platform: CodingAgentPlatform, clock: FakeClock) -> None:
        self.monitor, self.platform, self.clock = monitor, platform, clock

    def incident(self) -> str:
        report = IncidentReport(
            title="Checkout crashes on empty cart",
            detail=f"TypeError in cart.total(); the deploy used {CANARY}",
            source="ci",
            event="ci.smoke.failed",
            level="error",
        )
        return intake.report_incident(self.monitor, REQUESTER, report).incident_id

    def approve(self, draft_id: str) -> None:
        asked = approvals.request_approval(self.monitor, REQUESTER, draft_id, "fix the crash")
        approvals.decide_approval(self.monitor, OPERATOR, asked.approval.approval_id, "approve", "looks right")

    async def launch(self) -> tuple[str, str, Receipt]:
        incident_id = self.incident()
        requested = code_changes.request_code_change(
            self.monitor, REQUESTER, incident_id, "acme/shop", "Guard cart.total() against an empty cart"
        )
        self.approve(requested.draft_id)
        result = await publishing.publish_draft(self.monitor, REQUESTER, requested.draft_id)
        with self.monitor.session() as session:
            receipt = session.get(Receipt, result.receipt.receipt_id)
            assert receipt is not None
            session.expunge(receipt)
        return incident_id, requested.run_id, receipt

    def run(self, run_id: str) -> Any:
        return code_changes.get_code_change(self.monitor, REQUESTER, run_id)

    def launches(self) -> list[Any]:
        return [r for r in self.platform.requests if r.method == "POST" and r.path == "/agents"]


@pytest.fixture
def world_factory(make_monitor: MonitorFactory, clock: FakeClock, tmp_path: Path) -> Iterator[Any]:
    stack: list[Any] = []

    def make(*, webhooks: bool = True, **platform_options: Any) -> World:
        platform = CodingAgentPlatform(token=TOKEN, **platform_options).__enter__()
        stack.append(platform)
        sock = bind_socket("127.0.0.1", 0)
        callback = f"http://127.0.0.1:{sock.getsockname()[1]}" if webhooks else None
        monitor = make_monitor(agent_config(platform.url, callback))
        server = http_server(monitor, sock=sock)
        server.__enter__()
        stack.append(server)
        return World(monitor, platform, clock)

    yield make
    for item in reversed(stack):
        item.__exit__(None, None, None)


async def test_launch_then_webhook_finish_puts_the_pr_on_the_incident(world_factory: Any) -> None:
    world = world_factory()
    incident_id, run_id, receipt = await world.launch()
    assert receipt.status.value == "published" and receipt.external_id == "run-0001"
    [launch] = world.launches()
    assert launch.headers["x-incident-interface-version"] == INTERFACE_VERSION
    assert launch.headers["authorization"] == f"Bearer {TOKEN}"
    body = launch.body
    assert body["task_id"] == receipt.idempotency_key
    assert body["incident_id"] == incident_id and body["reference"] == incident_id
    assert body["repository"] == "acme/shop"
    assert body["webhook"]["url"].endswith(f"/incident-monitor/code-changes/{run_id}/webhook")
    assert body["webhook"]["secret"].startswith("whsec_")
    assert "Guard cart.total()" in body["prompt"] and "Checkout crashes" in body["prompt"]
    assert len(body["prompt"]) <= MAX_BRIEF_CHARS
    assert world.run(run_id).status == "running"

    world.platform.finish("run-0001")
    assert world.platform.webhooks_sent == [("run-0001", 200)]
    run = world.run(run_id)
    assert run.status == "finished" and run.pr_url == "https://github.example/acme/shop/pull/1"
    assert run.branch == "agent/run-0001"
    with world.monitor.session() as session:
        stored = session.get(Receipt, receipt.receipt_id)
        incident = session.get(Incident, incident_id)
        assert stored is not None and stored.external_url == run.pr_url
        assert incident is not None and f"pull_request:{run.pr_url}" in incident.evidence_refs
    listed = code_changes.list_code_changes(world.monitor, REQUESTER, incident_id).code_changes
    assert [c.run_id for c in listed] == [run_id]


async def test_a_second_publish_launches_nothing(world_factory: Any) -> None:
    world = world_factory()
    _, _run_id, receipt = await world.launch()
    with world.monitor.session() as session:
        draft_id = session.get(Receipt, receipt.receipt_id).draft_id  # type: ignore[union-attr]
    again = await publishing.publish_draft(world.monitor, REQUESTER, draft_id)
    assert again.reused and again.receipt.receipt_id == receipt.receipt_id
    assert len(world.launches()) == 1 and len(world.platform.runs) == 1


async def test_dropped_webhooks_polling_finishes_the_run(world_factory: Any) -> None:
    world = world_factory(drop_webhooks=True)
    _, run_id, _ = await world.launch()
    world.platform.finish("run-0001")
    assert world.platform.webhooks_sent == []
    assert await code_change_status.poll_due(world.monitor) == [run_id]  # due at once after launch
    assert world.run(run_id).status == "finished"
    polls = [r for r in world.platform.requests if r.method == "GET" and r.path == "/agents/run-0001"]
    assert len(polls) == 1 and polls[0].headers["x-incident-interface-version"] == INTERFACE_VERSION


async def test_polling_waits_for_the_interval(world_factory: Any) -> None:
    world = world_factory(drop_webhooks=True)
    _, run_id, _ = await world.launch()
    assert await code_change_status.poll_due(world.monitor) == [run_id]
    assert await code_change_status.poll_due(world.monitor) == []  # next poll in 120 s
    world.clock.advance(seconds=119)
    assert await code_change_status.poll_due(world.monitor) == []
    world.platform.finish("run-0001")
    world.clock.advance(seconds=1)
    assert await code_change_status.poll_due(world.monitor) == [run_id]
    assert world.run(run_id).status == "finished"


async def test_duplicate_and_reordered_webhooks_are_harmless(world_factory: Any) -> None:
    world = world_factory(reorder_webhooks=True)
    _, run_id, _ = await world.launch()
    world.platform.progress("run-0001", "Reproduced the crash")
    world.platform.finish("run-0001")  # sends finished twice, then the older running twice
    assert [status for _, status in world.platform.webhooks_sent] == [200, 200, 200, 200]
    run = world.run(run_id)
    assert run.status == "finished" and run.summary.startswith("Opened a draft PR")
    with world.monitor.session() as session:
        finished = session.exec(select(AuditEvent).where(AuditEvent.action == "code_change.status")).all()
        assert len(finished) == 1


async def test_a_forged_signature_is_refused_and_audited(world_factory: Any) -> None:
    world = world_factory()
    _, run_id, _ = await world.launch()
    run = world.platform.runs["run-0001"]
    body = json.dumps({"status": "finished", "pr_url": "https://evil.example/pr/1", "summary": "x"}).encode()
    forged = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="
    assert world.platform.send_webhook(run, body, secret=forged) == 401
    assert world.run(run_id).status == "running"
    with world.monitor.session() as session:
        denied = session.exec(select(AuditEvent).where(AuditEvent.action == "code_change_webhook")).all()
        assert [e.decision.value for e in denied] == ["deny"]


async def test_unknown_runs_get_200(world_factory: Any) -> None:
    world = world_factory()
    base = world.monitor.config.destination("coding-agent").callback_base_url  # type: ignore[union-attr]
    body = json.dumps({"status": "running", "summary": "hi"})
    secret = launch_secret(webhook_key(world.monitor.data_dir), "ccr_gone")
    now = datetime.now(UTC)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign("msg_1", now, body),
    }
    answer = httpx2.post(f"{base}/incident-monitor/code-changes/ccr_gone/webhook", content=body, headers=headers)
    assert answer.status_code == 200


async def test_finished_without_pr_url_is_a_failure(world_factory: Any) -> None:
    world = world_factory(omit_pr_url=True)
    _incident_id, run_id, _ = await world.launch()
    world.platform.finish("run-0001")
    run = world.run(run_id)
    assert run.status == "failed" and run.pr_url is None and "without a pr_url" in run.summary
    with world.monitor.session() as session:
        selfmon = session.exec(select(Incident).where(Incident.source != "ci")).all()
        assert any(run_id in i.detail for i in selfmon), "a self-monitoring incident names the run"


async def test_the_two_hour_limit_fails_and_stops_the_run(world_factory: Any) -> None:
    world = world_factory(drop_webhooks=True)
    _, run_id, _ = await world.launch()
    world.clock.advance(minutes=121)
    assert await code_change_status.poll_due(world.monitor) == [run_id]
    run = world.run(run_id)
    assert run.status == "failed" and "max_run_minutes" in run.summary
    assert world.platform.runs["run-0001"].stopped
    world.platform.finish("run-0001")  # too late: terminal stays terminal
    world.clock.advance(minutes=5)
    assert await code_change_status.poll_due(world.monitor) == []
    assert world.run(run_id).status == "failed"


async def test_a_follow_up_needs_its_own_approval(world_factory: Any) -> None:
    world = world_factory()
    _, run_id, _ = await world.launch()
    world.platform.finish("run-0001")
    follow = code_changes.follow_up_code_change(world.monitor, REQUESTER, run_id, "Also handle a None cart")
    with pytest.raises(ApprovalRequired):
        await publishing.publish_draft(world.monitor, REQUESTER, follow.draft_id)
    assert world.platform.runs["run-0001"].followups == []
    world.approve(follow.draft_id)
    await publishing.publish_draft(world.monitor, REQUESTER, follow.draft_id)
    assert world.platform.runs["run-0001"].followups and "None cart" in world.platform.runs["run-0001"].followups[0]
    assert world.run(run_id).status == "running"
    world.platform.finish("run-0001")
    run = world.run(run_id)
    assert run.status == "finished" and run.pr_url == "https://github.example/acme/shop/pull/1"
    with world.monitor.session() as session:
        assert session.get(CodeChangeRun, run_id).follow_ups == 1  # type: ignore[union-attr]


async def test_stop_counts_404_as_stopped(world_factory: Any) -> None:
    world = world_factory()
    _, run_id, _ = await world.launch()
    world.platform.forget("run-0001")
    stopped = await code_changes.stop_code_change(world.monitor, REQUESTER, run_id)
    assert stopped.status == "stopped"
    assert [r.path for r in world.platform.requests if r.path.endswith("/stop")] == ["/agents/run-0001/stop"]


async def test_code_change_tools_need_their_scope(world_factory: Any) -> None:
    world = world_factory()
    incident_id = world.incident()
    reader = principal("reader", "read", "report", "approval_request", "publish")
    with pytest.raises(InsufficientScope, match="incident_monitor:code_change"):
        code_changes.request_code_change(world.monitor, reader, incident_id, "acme/shop", "fix it")


async def test_secrets_stay_out_of_prompt_receipts_logs_and_audit(
    world_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    world = world_factory()
    _, run_id, _receipt = await world.launch()
    world.platform.finish("run-0001")
    [launch] = world.launches()
    launch_secret_value = launch.body["webhook"]["secret"]
    assert CANARY not in launch.body["prompt"] and TOKEN not in launch.body["prompt"]
    with world.monitor.session() as session:
        stored = [r.model_dump_json() for r in session.exec(select(Receipt)).all()]
        audit = [e.model_dump_json() for e in session.exec(select(AuditEvent)).all()]
    view = world.run(run_id).model_dump_json()
    for secret in (TOKEN, launch_secret_value, CANARY):
        for text in (*stored, *audit, view, caplog.text):
            assert secret not in text


async def test_the_egress_guard_applies(make_monitor: MonitorFactory) -> None:
    with CodingAgentPlatform(token=TOKEN) as platform:
        # A name, not an address literal: readiness passes, and the guarded transport refuses at connect time.
        config = agent_config(platform.url.replace("127.0.0.1", "localhost"), None, allow_private_networks=False)
        monitor = make_monitor(config)
        world = World(monitor, platform, None)  # type: ignore[arg-type]
        _, run_id, receipt = await world.launch()
        assert receipt.status.value == "failed" and "egress" in (receipt.error or "")
        assert platform.requests == []
        assert world.run(run_id).status == "failed"


async def test_no_coding_agent_destination_refuses_naming_the_config(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor({"destinations": [{"id": "telemetry", "kind": "telemetry"}]})
    world = World(monitor, None, None)  # type: ignore[arg-type]
    with pytest.raises(PublishBlocked, match="kind = 'coding_agent'"):
        code_changes.request_code_change(monitor, REQUESTER, world.incident(), "acme/shop", "fix it")


def test_a_never_route_to_a_coding_agent_is_refused_at_load() -> None:
    config = agent_config("https://agents.example.com", None)
    config["routes"] = [
        {"id": "r", "destination_id": "coding-agent", "approval_policy": "never", "match": {"sources": ["ci"]}}
    ]
    with pytest.raises(ValueError, match="'never' is refused for a coding_agent"):
        MonitorConfig.model_validate(config)


def test_plain_http_needs_allow_insecure_http(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(agent_config("http://agents.example.com", None, allow_insecure_http=False))
    reasons = monitor.readiness("coding-agent").reasons
    assert any("base_url is not https://" in r for r in reasons)


async def test_ping_says_what_failed(make_monitor: MonitorFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    with CodingAgentPlatform(token=TOKEN) as platform:
        monitor = make_monitor(agent_config(platform.url, None))
        ok = await destination_calls.ping_destination(monitor, OPERATOR, "coding-agent")
        assert ok.ok
        assert platform.requests[-1].headers["x-incident-interface-version"] == INTERFACE_VERSION
        monkeypatch.setenv(TOKEN_VARIABLE, "wrong-token-0000000000")
        bad = await destination_calls.ping_destination(monitor, OPERATOR, "coding-agent")
        assert not bad.ok and "refused our bearer token" in bad.detail
        monkeypatch.delenv(TOKEN_VARIABLE)
        missing = await destination_calls.ping_destination(monitor, OPERATOR, "coding-agent")
        assert not missing.ok and TOKEN_VARIABLE in missing.detail
