"""Publishing: the outbox, retries, permits, one-time approvals, policy changes and concurrent publishes."""

from __future__ import annotations

import ast
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from sqlmodel import func, select

from incident_monitor.destinations.base import DestinationAdapter, PublishOutcome, PublishRequest
from incident_monitor.destinations.registry import ADAPTERS, adapter_class
from incident_monitor.domain.enums import ApprovalStatus, DraftStatus, IncidentStatus, ReceiptStatus
from incident_monitor.domain.io import IncidentReport, PublishResult
from incident_monitor.domain.models import ApprovalRequest, Draft, Incident, Receipt
from incident_monitor.errors import ApprovalRequired
from incident_monitor.policy.permit import PermitError, PublishPermit, issue_permit
from incident_monitor.policy.principal import Principal
from incident_monitor.policy.scopes import ALL_SCOPES
from incident_monitor.server.tools import build_mcp_server
from incident_monitor.service import approvals, incidents, intake, publishing, triage
from incident_monitor.service.monitor import Monitor
from support.drafts import approve, approved_draft, lease_lapses, report_runtime_failure
from support.mcp_helpers import call_ok
from support.monitors import AGENT, OPERATOR, FakeClock, MonitorFactory, flow_config
from support.paths import SRC
from support.receivers import WebhookReceiver

MAX_ATTEMPTS = flow_config()["destinations"][0]["max_attempts"]


# --- helpers -------------------------------------------------------------------------------------


def get_row(monitor: Monitor, table: Any, key: str) -> Any:
    with monitor.session() as session:
        row = session.get(table, key)
    assert row is not None
    return row


def count(monitor: Monitor, table: Any) -> int:
    with monitor.session() as session:
        return session.exec(select(func.count()).select_from(table)).one()


def receipts_for(monitor: Monitor, draft_id: str) -> list[Receipt]:
    with monitor.session() as session:
        return list(session.exec(select(Receipt).where(Receipt.draft_id == draft_id)).all())


# --- the outbox ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_crash_after_claim_is_finished_by_recovery_exactly_once(
    make_monitor: MonitorFactory, receiver: WebhookReceiver, tmp_path: Path, clock: FakeClock
) -> None:
    data_dir = tmp_path / "outbox"
    monitor = make_monitor(flow_config(receiver.url), data_dir=data_dir)
    draft_id = approved_draft(monitor)

    claimed = publishing.claim(monitor, AGENT, draft_id)
    monitor.close()  # the process dies before the adapter is called

    restarted = make_monitor(flow_config(receiver.url), data_dir=data_dir)
    pending = get_row(restarted, Receipt, claimed.receipt_id)
    assert pending.status is ReceiptStatus.pending
    assert pending.idempotency_key.startswith("idem_")
    assert get_row(restarted, Draft, draft_id).status is DraftStatus.publishing
    assert receiver.deliveries == []

    lease_lapses(restarted, clock)
    assert await publishing.recover_pending(restarted) == [claimed.receipt_id]

    assert len(receiver.deliveries) == 1
    assert receiver.deliveries[0].webhook_id == pending.idempotency_key
    finished = get_row(restarted, Receipt, claimed.receipt_id)
    assert finished.status is ReceiptStatus.published
    assert finished.attempt_count == 1
    assert get_row(restarted, Draft, draft_id).status is DraftStatus.published

    assert await publishing.recover_pending(restarted) == []
    again = await publishing.publish_draft(restarted, AGENT, draft_id)

    assert again.reused is True
    assert again.receipt.receipt_id == claimed.receipt_id
    assert len(receiver.deliveries) == 1
    assert len(receipts_for(restarted, draft_id)) == 1


@pytest.mark.anyio
async def test_crash_after_delivery_resends_with_the_same_webhook_id(
    make_monitor: MonitorFactory, receiver: WebhookReceiver, clock: FakeClock
) -> None:
    monitor = make_monitor(flow_config(receiver.url))
    draft_id = approved_draft(monitor)
    claimed = publishing.claim(monitor, AGENT, draft_id)
    assert claimed.request is not None and claimed.permit is not None

    delivered = await publishing.deliver(monitor, claimed.request, claimed.permit)
    assert delivered.status == "published"
    # ...and the process dies before settle(): the outcome is lost, the receipt still pending.
    assert get_row(monitor, Receipt, claimed.receipt_id).status is ReceiptStatus.pending

    lease_lapses(monitor, clock)
    assert await publishing.recover_pending(monitor) == [claimed.receipt_id]

    assert len(receiver.deliveries) == 2
    assert receiver.unique_webhook_ids() == {claimed.request.idempotency_key}
    assert get_row(monitor, Receipt, claimed.receipt_id).status is ReceiptStatus.published


@pytest.mark.anyio
async def test_approval_free_draft_goes_through_the_outbox_too(make_monitor: MonitorFactory, clock: FakeClock) -> None:
    monitor = make_monitor()  # info-level report → telemetry default, no approval
    result = intake.report_incident(
        monitor, AGENT, IncidentReport(title="Cache warm slow", source="ci", event="x.slow", level="info")
    )
    assert result.draft_id is not None

    claimed = publishing.claim(monitor, AGENT, result.draft_id)
    assert get_row(monitor, Receipt, claimed.receipt_id).status is ReceiptStatus.pending
    lease_lapses(monitor, clock)
    assert await publishing.recover_pending(monitor) == [claimed.receipt_id]

    receipt = get_row(monitor, Receipt, claimed.receipt_id)
    assert receipt.status is ReceiptStatus.published
    assert receipt.approval_id is None
    assert receipt.external_id == "telemetry.jsonl:1"
    lines = (monitor.data_dir / "telemetry.jsonl").read_text().splitlines()
    assert len(lines) == 1


# --- failures and retries ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_failed_publish_then_retry_keeps_one_receipt_and_one_approval(
    make_monitor: MonitorFactory, receiver: WebhookReceiver
) -> None:
    monitor = make_monitor(flow_config(receiver.url))
    incident_id, draft_id = report_runtime_failure(monitor)
    approval_id = approve(monitor, draft_id)
    receiver.fail_first, receiver.fail_status = 10**6, 500  # down for every attempt

    failed = await publishing.publish_draft(monitor, AGENT, draft_id)

    assert failed.receipt.status is ReceiptStatus.failed
    assert failed.receipt.attempt_count == MAX_ATTEMPTS
    assert failed.receipt.error is not None
    assert "webhook answered 500" in failed.receipt.error
    assert "publish again" in failed.receipt.error
    assert failed.draft_status is DraftStatus.publish_failed
    assert f"publish_draft with draft_id={draft_id}" in failed.next_step
    assert receiver.deliveries == []
    assert get_row(monitor, Incident, incident_id).status is IncidentStatus.open

    receiver.fail_first = 0  # healthy again
    retried = await publishing.publish_draft(monitor, AGENT, draft_id)

    assert retried.reused is False
    assert retried.receipt.receipt_id == failed.receipt.receipt_id
    assert retried.receipt.status is ReceiptStatus.published
    assert retried.receipt.attempt_count == MAX_ATTEMPTS + 1
    assert retried.receipt.error is None
    assert retried.draft_status is DraftStatus.published
    assert len(receiver.deliveries) == 1
    assert get_row(monitor, Incident, incident_id).status is IncidentStatus.published
    # The approval was used for this very publish, so the retry needed no new one.
    assert count(monitor, ApprovalRequest) == 1
    used = get_row(monitor, ApprovalRequest, approval_id)
    assert used.status is ApprovalStatus.used
    assert used.used_by_receipt_id == failed.receipt.receipt_id


# --- permits -------------------------------------------------------------------------------------


def a_request(destination_id: str) -> PublishRequest:
    return PublishRequest(
        receipt_id="rcp_0123456789abcdef",
        idempotency_key="idem_" + "a" * 32,
        draft_id="drf_x",
        incident_id="inc_x",
        destination_id=destination_id,
        route_id=None,
        title="t",
        body="b",
        severity="low",
        labels=[],
        fingerprint="fp",
        evidence={},
        evidence_digest="sha256:" + "0" * 64,
    )


def permit_for(request: PublishRequest, **override: str) -> PublishPermit:
    fields = {
        "receipt_id": request.receipt_id,
        "destination_id": request.destination_id,
        "evidence_digest": request.evidence_digest,
        "idempotency_key": request.idempotency_key,
        **override,
    }
    return issue_permit(**fields)


BAD_PERMITS: dict[str, Callable[[PublishRequest], Any]] = {
    "none": lambda r: None,
    "not-a-permit": lambda r: {"receipt_id": r.receipt_id, "signature": "x"},
    "other-receipt": lambda r: permit_for(r, receipt_id="rcp_other"),
    "other-destination": lambda r: permit_for(r, destination_id="somewhere-else"),
    "other-evidence": lambda r: permit_for(r, evidence_digest="sha256:" + "1" * 64),
    "other-key": lambda r: permit_for(r, idempotency_key="idem_other"),
    "forged-signature": lambda r: PublishPermit(
        receipt_id=r.receipt_id,
        destination_id=r.destination_id,
        evidence_digest=r.evidence_digest,
        idempotency_key=r.idempotency_key,
        signature="0" * 64,
    ),
}


@pytest.mark.anyio
@pytest.mark.parametrize("destination_id", ["ops-webhook", "telemetry"])
@pytest.mark.parametrize("bad", list(BAD_PERMITS))
async def test_adapters_refuse_without_a_matching_permit_and_send_nothing(
    make_monitor: MonitorFactory, receiver: WebhookReceiver, destination_id: str, bad: str
) -> None:
    monitor = make_monitor(flow_config(receiver.url))
    adapter = monitor.destinations[destination_id]
    request = a_request(destination_id)

    with pytest.raises(PermitError):
        await adapter.publish(request, BAD_PERMITS[bad](request))

    assert receiver.request_count == 0
    assert not (monitor.data_dir / "telemetry.jsonl").exists()


@pytest.mark.anyio
@pytest.mark.parametrize("destination_id", ["ops-webhook", "telemetry"])
async def test_adapters_accept_the_matching_permit(
    make_monitor: MonitorFactory, receiver: WebhookReceiver, destination_id: str
) -> None:
    # The control for the refusals above: the same request with its own permit goes through.
    monitor = make_monitor(flow_config(receiver.url))
    request = a_request(destination_id)

    outcome = await monitor.destinations[destination_id].publish(request, permit_for(request))

    assert outcome.status == "published"


def _module_name(path: Path) -> str:
    return path.relative_to(SRC).as_posix()


def _uses(tree: ast.AST) -> dict[str, bool]:
    calls_publish = calls_deliver = uses_issue_permit = builds_permit = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            calls_publish |= node.func.attr == "publish"
            calls_deliver |= node.func.attr == "_deliver"
        if isinstance(node, ast.ImportFrom):
            uses_issue_permit |= any(alias.name == "issue_permit" for alias in node.names)
        if isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            uses_issue_permit |= name == "issue_permit"
        if isinstance(node, ast.Call):
            callee = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            builds_permit |= callee == "PublishPermit"
    return {
        "calls .publish(": calls_publish,
        "calls ._deliver(": calls_deliver,
        "uses issue_permit": uses_issue_permit,
        "builds PublishPermit": builds_permit,
    }


def test_static_only_the_publishing_service_opens_an_adapter() -> None:
    found: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path)
        if module.startswith("destinations/") or module == "policy/permit.py":
            continue  # the adapters and the permit itself
        for what, used in _uses(ast.parse(path.read_text(encoding="utf-8"))).items():
            if used:
                found.setdefault(what, set()).add(module)

    assert found == {
        "calls .publish(": {"service/publishing.py"},
        "uses issue_permit": {"service/publishing.py"},
    }


def test_static_adapters_call_deliver_only_behind_the_permit_check() -> None:
    callers = {
        _module_name(path)
        for path in SRC.rglob("*.py")
        if _uses(ast.parse(path.read_text(encoding="utf-8")))["calls ._deliver("]
    }

    assert callers == {"destinations/base.py"}


class PublishSpy:
    """Wraps every adapter class's ``publish``; records calls, then lets them through."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        for cls in {DestinationAdapter, *map(adapter_class, ADAPTERS)}:
            if "publish" in cls.__dict__:
                monkeypatch.setattr(cls, "publish", self._wrap(cls.__dict__["publish"]))

    def _wrap(self, original: Callable[..., Awaitable[PublishOutcome]]) -> Callable[..., Awaitable[PublishOutcome]]:
        async def spy(adapter: DestinationAdapter, request: PublishRequest, permit: Any) -> PublishOutcome:
            self.calls.append(request.receipt_id)
            return await original(adapter, request, permit)

        return spy


class Caller:
    """The principal the in-memory server sees; switched between calls (an agent asks, another approves)."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    def __call__(self) -> Principal:
        return self.principal


@pytest.mark.anyio
async def test_runtime_no_tool_but_publish_draft_reaches_an_adapter(
    make_monitor: MonitorFactory, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monitor = make_monitor(flow_config(receiver.url))
    spy = PublishSpy(monkeypatch)
    agent = Principal(name="agent-all-scopes", scopes=ALL_SCOPES)
    operator = Principal(name="operator-all-scopes", scopes=ALL_SCOPES, kind="operator")
    caller = Caller(agent)
    called: set[str] = set()

    async with Client(build_mcp_server(monitor, caller)) as client:
        listed = {tool.name for tool in (await client.list_tools()).tools}

        async def ok(tool: str, **arguments: Any) -> dict[str, Any]:
            called.add(tool)
            return await call_ok(client, tool, **arguments)

        await ok("get_status")
        report = {"source": "ci", "event": "ci.smoke.failed", "level": "warning", "route_tags": ["runtime-failure"]}
        first = await ok("report_incident", title="Checkout smoke failed", **report)
        second = await ok("report_incident", title="Login smoke failed", **report)
        third = await ok("report_incident", title="Cache warm slow", source="ci", event="cache.slow", level="info")
        await ok("list_incidents")
        await ok("get_incident", incident_id=first["incident_id"])
        await ok("list_drafts")
        await ok("get_draft", draft_id=first["draft_id"])
        await ok("triage_draft", draft_id=first["draft_id"])
        await ok("preview_route", draft_id=first["draft_id"])
        await ok("preview_route", route_tags=["runtime-failure"], level="critical")
        requested = await ok("request_approval", draft_id=first["draft_id"], reason="page on-call")
        caller.principal = operator
        await ok("decide_approval", approval_id=requested["approval"]["approval_id"], decision="approve", note="ok")
        await ok("list_receipts")
        await ok("list_sources")
        await ok("resolve_incident", incident_id=third["incident_id"], resolution_note="cache tuned")
        # Governance evidence, probes included, runs dry: no adapter is reached.
        for governance_tool in (
            "get_authority_inventory",
            "run_posture_checks",
            "run_assessment_probes",
            "build_assessment_report",
            "build_deployment_cards",
        ):
            await ok(governance_tool)
        caller.principal = agent

        await ok("list_code_changes")
        # The other code-change tools need a coding_agent destination: tests/server/test_code_change_tools.py runs
        # them against the reference platform (stop_code_change reaches it through the publishing service).
        code_change_tools = {"request_code_change", "follow_up_code_change", "stop_code_change", "get_code_change"}
        assert called == listed - {"publish_draft"} - code_change_tools, "every tool but publish_draft was exercised"
        assert spy.calls == []

        refused = await client.call_tool("publish_draft", {"draft_id": second["draft_id"]})
        assert refused.is_error
        assert "approval required" in refused.content[0].text  # type: ignore[union-attr]
        assert f"request_approval with draft_id={second['draft_id']}" in refused.content[0].text  # type: ignore[union-attr]
        assert spy.calls == []
        assert receiver.request_count == 0

        published = await call_ok(client, "publish_draft", draft_id=first["draft_id"])

    assert spy.calls == [published["receipt"]["receipt_id"]]
    assert len(receiver.deliveries) == 1


# --- approvals are single-use and bound to the policy ----------------------------------------------


@pytest.mark.anyio
async def test_republishing_returns_the_published_receipt_not_an_earlier_blocked_one(
    make_monitor: MonitorFactory, receiver: WebhookReceiver
) -> None:
    # The FakeClock stands still, so the blocked attempt and the publish share a timestamp.
    monitor = make_monitor(flow_config(receiver.url))
    _, draft_id = report_runtime_failure(monitor)
    with pytest.raises(ApprovalRequired):
        await publishing.publish_draft(monitor, AGENT, draft_id)
    approve(monitor, draft_id)
    published = await publishing.publish_draft(monitor, AGENT, draft_id)

    again = await publishing.publish_draft(monitor, AGENT, draft_id)

    assert sorted(r.status.value for r in receipts_for(monitor, draft_id)) == ["blocked", "published"]
    assert again.reused is True
    assert again.receipt.receipt_id == published.receipt.receipt_id
    assert again.receipt.status is ReceiptStatus.published
    assert len(receiver.deliveries) == 1


@pytest.mark.anyio
async def test_an_approval_is_used_once(make_monitor: MonitorFactory, receiver: WebhookReceiver) -> None:
    monitor = make_monitor(flow_config(receiver.url))
    incident_id, draft_id = report_runtime_failure(monitor)
    approval_id = approve(monitor, draft_id)

    published = await publishing.publish_draft(monitor, AGENT, draft_id)

    used = get_row(monitor, ApprovalRequest, approval_id)
    assert used.status is ApprovalStatus.used
    assert used.used_by_receipt_id == published.receipt.receipt_id
    assert used.used_at is not None
    assert published.receipt.approval_id == approval_id

    incidents.resolve_incident(monitor, OPERATOR, incident_id, "fixed the checkout service")
    _, new_draft_id = report_runtime_failure(monitor)  # a recurrence after publication: a fresh draft
    assert new_draft_id != draft_id

    with pytest.raises(ApprovalRequired) as caught:
        await publishing.publish_draft(monitor, AGENT, new_draft_id)

    assert f"call request_approval with draft_id={new_draft_id}" in caught.value.message
    assert len(receiver.deliveries) == 1


@pytest.mark.anyio
async def test_an_approval_does_not_cover_changed_evidence_after_a_failed_publish(
    make_monitor: MonitorFactory, receiver: WebhookReceiver
) -> None:
    monitor = make_monitor(flow_config(receiver.url))
    _, draft_id = report_runtime_failure(monitor)
    approve(monitor, draft_id)
    receiver.fail_first = 10**6
    failed = await publishing.publish_draft(monitor, AGENT, draft_id)
    assert failed.draft_status is DraftStatus.publish_failed

    changed = triage.triage_draft(monitor, AGENT, draft_id)  # adds its findings: new evidence
    assert changed.evidence_changed is True
    receiver.fail_first = 0

    with pytest.raises(ApprovalRequired) as caught:
        await publishing.publish_draft(monitor, AGENT, draft_id)

    assert "already used for another publish" in caught.value.message
    assert f"request_approval with draft_id={draft_id}" in caught.value.message
    assert receiver.deliveries == []


def reconfigured(receiver: WebhookReceiver) -> dict[str, Any]:
    config = flow_config(receiver.url)
    config["routes"][0]["labels"] = ["pager"]
    return config


@pytest.mark.anyio
async def test_policy_change_between_approval_and_publish_refuses_the_publish(
    make_monitor: MonitorFactory, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    data_dir = tmp_path / "policy"
    before = make_monitor(flow_config(receiver.url), data_dir=data_dir)
    draft_id = approved_draft(before)
    before.close()

    after = make_monitor(reconfigured(receiver), data_dir=data_dir)
    assert after.config.policy_version != before.config.policy_version

    with pytest.raises(ApprovalRequired) as caught:
        await publishing.publish_draft(after, AGENT, draft_id)

    assert "policy changed" in caught.value.message
    assert f"call request_approval with draft_id={draft_id}" in caught.value.message
    assert receiver.request_count == 0
    [blocked] = receipts_for(after, draft_id)
    assert blocked.status is ReceiptStatus.blocked
    assert blocked.error is not None and "policy changed" in blocked.error


@pytest.mark.anyio
async def test_after_a_policy_change_the_agent_can_get_a_fresh_approval(
    make_monitor: MonitorFactory, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    data_dir = tmp_path / "policy"
    before = make_monitor(flow_config(receiver.url), data_dir=data_dir)
    _, draft_id = report_runtime_failure(before)
    old_approval_id = approve(before, draft_id)
    before.close()
    after = make_monitor(reconfigured(receiver), data_dir=data_dir)

    renewed = approvals.request_approval(after, AGENT, draft_id, "the route changed; please re-approve")

    assert renewed.approval.approval_id != old_approval_id
    assert renewed.approval.status is ApprovalStatus.pending
    assert renewed.approval.policy_version == after.config.policy_version
    approvals.decide_approval(after, OPERATOR, renewed.approval.approval_id, "approve", "new route is fine")
    published = await publishing.publish_draft(after, AGENT, draft_id)
    assert published.receipt.status is ReceiptStatus.published
    assert published.receipt.approval_id == renewed.approval.approval_id


# --- concurrency ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_two_concurrent_publishes_deliver_once(make_monitor: MonitorFactory, receiver: WebhookReceiver) -> None:
    monitor = make_monitor(flow_config(receiver.url))
    draft_id = approved_draft(monitor)
    results: list[PublishResult] = []

    async def publish() -> None:
        results.append(await publishing.publish_draft(monitor, AGENT, draft_id))

    async with anyio.create_task_group() as group:
        group.start_soon(publish)
        group.start_soon(publish)

    assert len(results) == 2
    assert results[0].receipt.receipt_id == results[1].receipt.receipt_id
    assert sorted(r.reused for r in results) == [False, True]
    assert len(receiver.deliveries) == 1
    assert len(receipts_for(monitor, draft_id)) == 1
    assert get_row(monitor, Draft, draft_id).status is DraftStatus.published


@pytest.mark.anyio
async def test_two_publishes_from_parallel_threads_deliver_once(
    make_monitor: MonitorFactory, receiver: WebhookReceiver
) -> None:
    # Threads race the claim itself (two SQLite connections), not only the delivery.
    monitor = make_monitor(flow_config(receiver.url))
    draft_id = approved_draft(monitor)
    results: list[PublishResult] = []

    def publish_in_own_loop() -> None:
        results.append(anyio.run(publishing.publish_draft, monitor, AGENT, draft_id))

    async with anyio.create_task_group() as group:
        for _ in range(2):
            group.start_soon(anyio.to_thread.run_sync, publish_in_own_loop)

    assert len({r.receipt.receipt_id for r in results}) == 1
    assert len(receiver.deliveries) == 1
    assert len(receipts_for(monitor, draft_id)) == 1


# --- nothing synchronous on the event loop -------------------------------------------------------


@pytest.mark.anyio
async def test_publish_draft_tool_runs_claim_and_settle_in_worker_threads(
    make_monitor: MonitorFactory, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from incident_monitor.server.tools import IncidentMonitorTools

    monitor = make_monitor(flow_config(receiver.url))
    draft_id = approved_draft(monitor)
    loop_thread = threading.current_thread()
    threads: dict[str, threading.Thread] = {}

    def recording(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            threads[name] = threading.current_thread()
            return real(*args, **kwargs)

        return wrapper

    for name in ("claim", "settle", "publish_result"):
        monkeypatch.setattr(publishing, name, recording(name, getattr(publishing, name)))
    real_deliver = publishing.deliver

    async def deliver(*args: Any) -> PublishOutcome:
        threads["deliver"] = threading.current_thread()
        return await real_deliver(*args)

    monkeypatch.setattr(publishing, "deliver", deliver)

    result = await IncidentMonitorTools(monitor, lambda: AGENT).publish_draft(draft_id)

    assert result.receipt.status is ReceiptStatus.published
    assert set(threads) == {"claim", "settle", "publish_result", "deliver"}
    assert threads["deliver"] is loop_thread  # the adapter's async I/O is awaited on the loop
    assert all(threads[name] is not loop_thread for name in ("claim", "settle", "publish_result"))
