"""Governed code-change delegation (issue 15): the request and its brief, approval, launch, follow-up, stop, the
poller's status path, the time limit, failures, and secrets — against the reference platform over real sockets
(tests/support/coding_agent.py). The webhook endpoint is tests/server/test_code_change_webhook.py; replicas and
the poll lease are tests/service/test_code_change_poll_lease.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from sqlmodel import select

from incident_monitor.domain.code_change import INTERFACE_VERSION, CodeChangeRun
from incident_monitor.domain.models import AuditEvent, Draft, Incident, Receipt
from incident_monitor.errors import ApprovalRequired, InsufficientScope, InvalidInput, PublishBlocked
from incident_monitor.service import approvals, code_change_status, code_changes, publishing
from incident_monitor.service.code_change_brief import MAX_BRIEF_CHARS
from support.coding_agent import CANARY, INSTRUCTIONS, REQUESTER, TOKEN, World
from support.monitors import MonitorFactory, principal

pytestmark = pytest.mark.anyio
WorldFactory = Callable[..., World]
PR_URL = "https://github.example/acme/shop/pull/1"


# --- the request and its brief ---------------------------------------------------------------------------------


async def test_a_request_drafts_a_brief_routed_to_the_coding_agent_with_approval_required(
    coding_agent_world: WorldFactory,
) -> None:
    world = coding_agent_world(webhooks=False)
    incident_id = world.incident()
    requested = world.request(incident_id)

    assert requested.destination_id == "coding-agent" and requested.run_id.startswith("ccr_")
    assert f"request_approval with draft_id={requested.draft_id}" in requested.next_step
    with world.monitor.session() as session:
        draft = session.get(Draft, requested.draft_id)
        assert draft is not None
        brief = draft.body
        assert draft.evidence["code_change"]["brief_digest"].startswith("sha256:")
    for part in ("Checkout crashes on empty cart", incident_id, "`acme/shop`", INSTRUCTIONS, "pull request"):
        assert part in brief
    assert "## Investigation snapshot" in brief and "### Occurrences" in brief
    assert CANARY not in brief  # the incident detail's secret, redacted
    assert world.run(requested.run_id).status == "requested"
    with pytest.raises(ApprovalRequired):  # always: a code change is reviewed before it launches
        await publishing.publish_draft(world.monitor, REQUESTER, requested.draft_id)
    assert world.launches() == []


async def test_the_brief_is_capped_at_30000_characters(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world(webhooks=False)
    incident_id = world.incident(detail="stack frame\n" * 1_666)  # just under the 20,000 of limits.max_detail_chars
    requested = world.request(incident_id, INSTRUCTIONS + "." * 9_900)
    with world.monitor.session() as session:
        brief = session.get(Draft, requested.draft_id).body  # type: ignore[union-attr]

    assert len(brief) == MAX_BRIEF_CHARS
    assert brief.endswith("[snapshot truncated at 30,000 characters]\n")
    assert INSTRUCTIONS in brief  # the instructions come before the snapshot


async def test_the_approval_is_bound_to_the_brief(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world(webhooks=False)
    incident_id = world.incident()
    first, second = world.request(incident_id), world.request(incident_id, "Also log the cart id")
    world.approve(first.draft_id)

    with world.monitor.session() as session:
        drafts = [session.get(Draft, d) for d in (first.draft_id, second.draft_id)]
    assert drafts[0].evidence_digest != drafts[1].evidence_digest  # type: ignore[union-attr]
    with pytest.raises(ApprovalRequired):  # the other brief's approval does not cover this one
        await publishing.publish_draft(world.monitor, REQUESTER, second.draft_id)
    await publishing.publish_draft(world.monitor, REQUESTER, first.draft_id)
    assert len(world.launches()) == 1


async def test_bad_input_names_the_field(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world(webhooks=False)
    incident_id = world.incident()
    with pytest.raises(InvalidInput, match="instructions: required; say what the agent should change"):
        code_changes.request_code_change(world.monitor, REQUESTER, incident_id, "acme/shop", "   ")
    with pytest.raises(InvalidInput, match="repository: 201 characters, limit 200"):
        code_changes.request_code_change(world.monitor, REQUESTER, incident_id, "a" * 201, "fix it")
    with pytest.raises(InvalidInput, match="run_id: not a code change of this monitor") as refused:
        code_changes.get_code_change(world.monitor, REQUESTER, "ghp_notanid")
    assert "ghp_notanid" not in str(refused.value)


async def test_code_change_tools_need_their_scope(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world(webhooks=False)
    incident_id = world.incident()
    without = principal("reader", "read", "report", "approval_request", "publish")
    with pytest.raises(InsufficientScope, match="incident_monitor:code_change"):
        code_changes.request_code_change(world.monitor, without, incident_id, "acme/shop", "fix it")
    _, run_id, _ = await world.launch()
    with pytest.raises(InsufficientScope, match="incident_monitor:code_change"):
        code_changes.follow_up_code_change(world.monitor, without, run_id, "more")
    with pytest.raises(InsufficientScope, match="incident_monitor:code_change"):
        await code_changes.stop_code_change(world.monitor, without, run_id)
    assert world.run(run_id).status == "running"
    with pytest.raises(InsufficientScope, match="incident_monitor:read"):
        code_changes.list_code_changes(world.monitor, principal("writer", "code_change"))


# --- routing ---------------------------------------------------------------------------------------------------


async def test_no_coding_agent_destination_refuses_naming_the_config(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor({"destinations": [{"id": "telemetry", "kind": "telemetry"}]})
    world = World(monitor, None, None)  # type: ignore[arg-type]
    with pytest.raises(PublishBlocked, match="kind = 'coding_agent'"):
        code_changes.request_code_change(monitor, REQUESTER, world.incident(), "acme/shop", "fix it")
    with monitor.session() as session:
        assert session.exec(select(CodeChangeRun)).all() == []


async def test_with_two_platforms_a_route_decides_and_none_refuses(make_monitor: MonitorFactory) -> None:
    platform = {"kind": "coding_agent", "token": "env:CODING_AGENT_TOKEN", "allow_insecure_http": True}
    destinations = [
        {"id": "agents-a", "base_url": "http://127.0.0.1:9", **platform},
        {"id": "agents-b", "base_url": "http://127.0.0.1:9", **platform},
    ]
    unrouted = make_monitor({"destinations": destinations})
    incident_id = World(unrouted, None, None).incident()  # type: ignore[arg-type]
    with pytest.raises(PublishBlocked, match="add a route"):
        code_changes.request_code_change(unrouted, REQUESTER, incident_id, "acme/shop", "fix it")

    route = {"id": "ci-fixes", "destination_id": "agents-b", "match": {"sources": ["ci"]}}
    routed = make_monitor({"destinations": destinations, "routes": [route]}, data_dir=unrouted.data_dir / "b")
    incident_id = World(routed, None, None).incident()  # type: ignore[arg-type]
    assert code_changes.request_code_change(routed, REQUESTER, incident_id, "acme/shop", "fix").destination_id == (
        "agents-b"
    )


# --- launch and what the platform says -----------------------------------------------------------------------


async def test_the_launch_sends_the_brief_and_the_receipt_records_the_run(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world()
    incident_id, run_id, receipt = await world.launch()

    [launch] = world.launches()
    assert launch.headers["x-incident-interface-version"] == INTERFACE_VERSION
    assert launch.headers["authorization"] == f"Bearer {TOKEN}"
    assert launch.body["task_id"] == receipt.idempotency_key
    assert launch.body["incident_id"] == incident_id and launch.body["reference"] == incident_id
    assert launch.body["repository"] == "acme/shop" and INSTRUCTIONS in launch.body["prompt"]
    assert launch.body["webhook"]["url"].endswith(f"/incident-monitor/code-changes/{run_id}/webhook")
    assert launch.body["webhook"]["secret"].startswith("whsec_")
    assert receipt.status.value == "published" and receipt.external_id == "run-0001"
    assert receipt.external_url == f"{world.platform.url}/ui/runs/run-0001"
    run = world.run(run_id)
    assert run.status == "running" and run.platform_url == receipt.external_url


async def test_a_second_publish_launches_nothing(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world()
    _, _, receipt = await world.launch()
    again = await publishing.publish_draft(world.monitor, REQUESTER, receipt.draft_id)
    assert again.reused and again.receipt.receipt_id == receipt.receipt_id
    assert len(world.launches()) == 1 and len(world.platform.runs) == 1


async def test_a_retried_launch_with_the_same_task_id_returns_the_same_run(coding_agent_world: WorldFactory) -> None:
    """The platform side of idempotency: a second POST /agents with a task_id it knows starts nothing."""
    world = coding_agent_world(webhooks=False)
    await world.launch()
    [launch] = world.launches()
    run, created = world.platform.launch(launch.body)
    assert run.id == "run-0001" and not created and len(world.platform.runs) == 1


async def test_dropped_webhooks_polling_finishes_the_run_and_lands_the_pr(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world(drop_webhooks=True)
    incident_id, run_id, receipt = await world.launch()
    world.platform.finish("run-0001")
    assert world.platform.webhooks_sent == []

    assert await code_change_status.poll_due(world.monitor) == [run_id]  # due at once after launch
    run = world.run(run_id)
    assert run.status == "finished" and run.pr_url == PR_URL and run.branch == "agent/run-0001"
    assert run.finished_at is not None
    assert world.receipt(receipt.receipt_id).external_url == PR_URL
    with world.monitor.session() as session:
        incident = session.get(Incident, incident_id)
        assert incident is not None and f"pull_request:{PR_URL}" in incident.evidence_refs
    [poll] = world.polls("run-0001")
    assert poll.headers["x-incident-interface-version"] == INTERFACE_VERSION
    assert poll.headers["authorization"] == f"Bearer {TOKEN}"
    listed = code_changes.list_code_changes(world.monitor, REQUESTER, incident_id).code_changes
    assert [(c.run_id, c.status, c.pr_url) for c in listed] == [(run_id, "finished", PR_URL)]


async def test_polling_waits_for_the_interval(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world(drop_webhooks=True)
    _, run_id, _ = await world.launch()
    assert await code_change_status.poll_due(world.monitor) == [run_id]
    assert await code_change_status.poll_due(world.monitor) == []  # next poll in 120 s
    world.clock.advance(seconds=119)
    assert await code_change_status.poll_due(world.monitor) == []
    world.platform.progress("run-0001", "Reproduced the crash")
    world.clock.advance(seconds=1)
    assert await code_change_status.poll_due(world.monitor) == [run_id]
    assert world.run(run_id).summary == "Reproduced the crash"
    assert len(world.polls("run-0001")) == 2


async def test_finished_without_pr_url_is_a_failure_with_a_self_monitoring_incident(
    coding_agent_world: WorldFactory,
) -> None:
    world = coding_agent_world(drop_webhooks=True, omit_pr_url=True)
    _, run_id, _ = await world.launch()
    world.platform.finish("run-0001")
    await code_change_status.poll_due(world.monitor)

    run = world.run(run_id)
    assert run.status == "failed" and run.pr_url is None and "without a pr_url" in run.summary
    with world.monitor.session() as session:
        selfmon = session.exec(select(Incident).where(Incident.source != "ci")).all()
    assert [i.title.split(":")[0] for i in selfmon if run_id in i.detail] == ["Code change failed"]


async def test_an_errored_run_opens_a_self_monitoring_incident(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world(drop_webhooks=True)
    _, run_id, _ = await world.launch()
    world.platform.fail("run-0001", "The agent could not reproduce the failure")
    await code_change_status.poll_due(world.monitor)

    run = world.run(run_id)
    assert run.status == "error" and run.summary == "The agent could not reproduce the failure"
    with world.monitor.session() as session:
        selfmon = session.exec(select(Incident).where(Incident.source != "ci")).all()
    assert any(run_id in i.detail and "could not reproduce" in i.detail for i in selfmon)


async def test_the_platforms_answers_are_validated_and_redacted(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world(drop_webhooks=True)
    _, run_id, _ = await world.launch()
    platform_run = world.platform.runs["run-0001"]
    platform_run.summary = f"Pushed with {CANARY} " + "x" * 5_000
    await code_change_status.poll_due(world.monitor)
    run = world.run(run_id)
    assert CANARY not in run.summary and len(run.summary) <= 2_000 + 100  # redacted, capped

    platform_run.status, platform_run.pr_url = "finished", "javascript:alert(1)"
    world.clock.advance(minutes=2)
    await code_change_status.poll_due(world.monitor)
    run = world.run(run_id)
    assert run.status == "failed" and run.pr_url is None  # not a web URL: dropped, so finished without a PR


async def test_the_two_hour_limit_fails_and_stops_the_run(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world(drop_webhooks=True)
    _, run_id, _ = await world.launch()
    world.clock.advance(minutes=121)
    assert await code_change_status.poll_due(world.monitor) == [run_id]

    run = world.run(run_id)
    assert run.status == "failed" and "max_run_minutes" in run.summary
    assert world.platform.runs["run-0001"].stopped
    assert world.polls("run-0001") == []  # failed on our clock, not on the platform's word
    world.platform.finish("run-0001")  # too late: terminal stays terminal
    world.clock.advance(minutes=5)
    assert await code_change_status.poll_due(world.monitor) == []
    assert world.run(run_id).status == "failed"


# --- follow-up and stop -----------------------------------------------------------------------------------------


async def test_a_follow_up_needs_its_own_approval_and_updates_the_same_pr(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world()
    _, run_id, _ = await world.launch()
    world.platform.finish("run-0001")
    follow = code_changes.follow_up_code_change(world.monitor, REQUESTER, run_id, "Also handle a None cart")
    assert follow.run_id == run_id and follow.draft_id != world.run(run_id).run_id
    with pytest.raises(ApprovalRequired):
        await publishing.publish_draft(world.monitor, REQUESTER, follow.draft_id)
    assert world.platform.runs["run-0001"].followups == []

    world.approve(follow.draft_id)
    await publishing.publish_draft(world.monitor, REQUESTER, follow.draft_id)
    [sent] = world.platform.runs["run-0001"].followups
    assert "None cart" in sent
    assert world.run(run_id).status == "running"
    world.platform.finish("run-0001")
    run = world.run(run_id)
    assert run.status == "finished" and run.pr_url == PR_URL
    with world.monitor.session() as session:
        assert session.get(CodeChangeRun, run_id).follow_ups == 1  # type: ignore[union-attr]


async def test_a_follow_up_of_a_run_never_launched_is_refused(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world(webhooks=False)
    requested = world.request(world.incident())
    with pytest.raises(InvalidInput, match="never launched"):
        code_changes.follow_up_code_change(world.monitor, REQUESTER, requested.run_id, "more")


async def test_stop_counts_404_as_stopped(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world()
    _, run_id, _ = await world.launch()
    world.platform.forget("run-0001")
    stopped = await code_changes.stop_code_change(world.monitor, REQUESTER, run_id)
    assert stopped.status == "stopped" and stopped.finished_at is not None
    assert [r.path for r in world.platform.requests if r.path.endswith("/stop")] == ["/agents/run-0001/stop"]
    with pytest.raises(InvalidInput, match="was stopped"):
        code_changes.follow_up_code_change(world.monitor, REQUESTER, run_id, "more")


async def test_a_stopped_request_launches_nothing_even_when_approved(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world(webhooks=False)
    requested = world.request(world.incident())
    world.approve(requested.draft_id)
    stopped = await code_changes.stop_code_change(world.monitor, REQUESTER, requested.run_id)
    assert stopped.status == "stopped"
    with pytest.raises(PublishBlocked, match="was stopped"):
        await publishing.publish_draft(world.monitor, REQUESTER, requested.draft_id)
    assert world.launches() == [] and [r for r in world.platform.requests if r.path.endswith("/stop")] == []


async def test_a_pending_request_is_denied_when_stopped(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world(webhooks=False)
    requested = world.request(world.incident())
    approvals.request_approval(world.monitor, REQUESTER, requested.draft_id, "please")
    await code_changes.stop_code_change(world.monitor, REQUESTER, requested.run_id)
    with world.monitor.session() as session:
        assert session.get(Draft, requested.draft_id).status.value == "denied"  # type: ignore[union-attr]


# --- secrets -----------------------------------------------------------------------------------------------------


async def test_secrets_stay_out_of_prompt_receipts_logs_and_audit(
    coding_agent_world: WorldFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    world = coding_agent_world()
    _, run_id, _ = await world.launch(instructions=f"Fix it; the old token was {CANARY}")
    world.platform.finish("run-0001")
    follow = code_changes.follow_up_code_change(world.monitor, REQUESTER, run_id, f"and rotate {CANARY}")
    world.approve(follow.draft_id)
    await publishing.publish_draft(world.monitor, REQUESTER, follow.draft_id)

    [launch] = world.launches()
    per_launch_secret = launch.body["webhook"]["secret"]
    sent = [r.body for r in world.platform.requests if r.body is not None]
    assert all(CANARY not in str(body) and TOKEN not in str(body) for body in sent)
    with world.monitor.session() as session:
        stored = [r.model_dump_json() for r in session.exec(select(Receipt)).all()]
        stored += [d.model_dump_json() for d in session.exec(select(Draft)).all()]
        stored += [r.model_dump_json() for r in session.exec(select(CodeChangeRun)).all()]
        audit = [e.model_dump_json() for e in session.exec(select(AuditEvent)).all()]
    views = [world.run(run_id).model_dump_json()]
    views += [code_changes.list_code_changes(world.monitor, REQUESTER).model_dump_json()]
    for secret in (TOKEN, per_launch_secret, CANARY):
        for text in (*stored, *audit, *views, caplog.text):
            assert secret not in text
