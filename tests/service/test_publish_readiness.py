"""Readiness tells the truth about publishing: get_status and /readyz judge the destinations routes reach.

A reachable destination that is not ready, or whose latest publish failed, makes publishing degraded
(publish_ready false) with a problem naming it and the fix; none ready makes it not_ready. Failures
are kept per destination (failures in a row, the last error and when) across restarts.
"""

from __future__ import annotations

import httpx2
import pytest

from incident_monitor.domain.enums import DraftStatus, ReceiptStatus
from incident_monitor.service import approvals, incidents, publishing
from incident_monitor.service.destination_health import disable_destination
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.status import get_status, publish_readiness
from support.drafts import approved_draft, report_runtime_failure  # a runtime failure routed to ops-webhook, approved
from support.http_helpers import http_server
from support.monitors import AGENT, OPERATOR, WEBHOOK_SECRET_VARIABLE, FakeClock, MonitorFactory, flow_config
from support.receivers import WebhookReceiver

MAX_ATTEMPTS = flow_config()["destinations"][0]["max_attempts"]


def test_every_reachable_destination_ready_means_publish_ready(
    make_monitor: MonitorFactory, webhook_secret: str
) -> None:
    view = get_status(make_monitor(), OPERATOR)

    assert view.readiness.publish_ready is True
    assert view.readiness.publish_state == "ready"
    assert view.problems == []
    routed = {d.destination_id: d.routed_from for d in view.destinations}
    assert routed == {"ops-webhook": ["runtime-failures", "safety-signals"], "telemetry": ["default"]}


def test_a_reachable_destination_not_ready_degrades_publishing_and_names_the_fix(
    make_monitor: MonitorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(WEBHOOK_SECRET_VARIABLE, raising=False)

    view = get_status(make_monitor(), OPERATOR)

    assert view.readiness.publish_ready is False
    assert view.readiness.publish_state == "degraded"
    [problem] = view.problems
    assert problem.startswith(f"destination 'ops-webhook': environment variable {WEBHOOK_SECRET_VARIABLE}")
    assert "put the webhook signing secret in it" in problem
    assert "runtime-failures, safety-signals" in problem


def test_no_reachable_destination_ready_means_not_ready(
    make_monitor: MonitorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(WEBHOOK_SECRET_VARIABLE, raising=False)
    # Telemetry stays configured and ready, but nothing routes to it.
    monitor = make_monitor(flow_config(default_destination=None))

    view = get_status(monitor, OPERATOR)

    assert view.readiness.publish_state == "not_ready"
    assert view.readiness.publish_ready is False


def test_a_destination_no_route_reaches_does_not_degrade_publishing(
    make_monitor: MonitorFactory, webhook_secret: str
) -> None:
    config = flow_config()
    config["destinations"].append({"id": "spare", "kind": "webhook", "url": "http://127.0.0.1:9/x"})

    view = get_status(make_monitor(config), OPERATOR)

    assert view.readiness.publish_state == "ready"
    spare = next(d for d in view.destinations if d.destination_id == "spare")
    assert not spare.ready and spare.routed_from == []
    assert any(p.startswith("destination 'spare': ") and "blocked" not in p for p in view.problems)


@pytest.mark.anyio
async def test_failed_deliveries_degrade_publishing_and_show_the_last_error_and_time(
    make_monitor: MonitorFactory, webhook_secret: str, clock: FakeClock
) -> None:
    monitor = make_monitor()  # its webhook points at 127.0.0.1:9, where nothing listens
    first = approved_draft(monitor, "Checkout smoke test failed")
    second = approved_draft(monitor, "Payments smoke test failed")

    assert (await publishing.publish_draft(monitor, AGENT, first)).receipt.status is ReceiptStatus.failed
    clock.advance(minutes=5)
    failed = await publishing.publish_draft(monitor, AGENT, second)
    view = get_status(monitor, OPERATOR)

    assert failed.receipt.status is ReceiptStatus.failed
    assert view.readiness.publish_ready is False
    assert view.readiness.publish_state == "degraded"
    webhook = next(d for d in view.destinations if d.destination_id == "ops-webhook")
    assert webhook.ready  # configured right: the receiver is what fails
    assert webhook.consecutive_failures == 2
    assert webhook.last_error == failed.receipt.error
    assert webhook.last_error_at == clock.now
    assert webhook.last_published_at is None
    [problem] = view.problems
    assert problem.startswith("destination 'ops-webhook': 2 publishes in a row failed, the latest at ")
    assert clock.now.isoformat() in problem
    assert "publish the failed drafts again" in problem
    assert webhook_secret not in problem

    # Kept in the database: a restarted server still knows.
    reopened = Monitor.open(config=monitor.config, data_dir=monitor.data_dir, clock=clock)
    try:
        again = get_status(reopened, OPERATOR)
    finally:
        reopened.close()
    assert next(d for d in again.destinations if d.destination_id == "ops-webhook").consecutive_failures == 2


@pytest.mark.anyio
async def test_a_successful_publish_clears_the_failure_and_keeps_the_last_error_for_reference(
    make_monitor: MonitorFactory, webhook_secret: str, clock: FakeClock
) -> None:
    with WebhookReceiver(webhook_secret, fail_first=MAX_ATTEMPTS) as receiver:
        monitor = make_monitor(flow_config(receiver.url))
        draft_id = approved_draft(monitor)
        assert (await publishing.publish_draft(monitor, AGENT, draft_id)).receipt.status is ReceiptStatus.failed
        failed_at = clock.now
        assert get_status(monitor, OPERATOR).readiness.publish_state == "degraded"

        clock.advance(minutes=1)
        republished = await publishing.publish_draft(monitor, AGENT, draft_id)
        view = get_status(monitor, OPERATOR)

    assert republished.receipt.status is ReceiptStatus.published
    assert republished.draft_status is DraftStatus.published
    assert view.readiness.publish_state == "ready" and view.readiness.publish_ready
    assert view.problems == []
    webhook = next(d for d in view.destinations if d.destination_id == "ops-webhook")
    assert webhook.consecutive_failures == 0
    assert webhook.last_published_at == clock.now
    assert webhook.last_error is not None and webhook.last_error_at == failed_at


@pytest.mark.anyio
async def test_readyz_says_publishing_is_degraded_without_naming_what_is_missing(
    make_monitor: MonitorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(WEBHOOK_SECRET_VARIABLE, raising=False)
    monitor = make_monitor()

    with http_server(monitor) as url:
        ready = httpx2.get(f"{url}/readyz")

    assert ready.status_code == 200  # reports are still taken: the probe does not fail
    body = ready.json()
    assert body["status"] == "ready"
    assert body["publish_ready"] is False
    assert body["publish_state"] == "degraded"
    assert body["destinations_ready"] == 1 and body["destinations"] == 2
    [problem] = body["problems"]
    assert problem.startswith("1 of 2 destinations that routes publish to are not ready")
    assert "get_status" in problem
    assert WEBHOOK_SECRET_VARIABLE not in ready.text


def test_status_counts_open_incidents_and_pending_approvals(make_monitor: MonitorFactory, webhook_secret: str) -> None:
    monitor = make_monitor()
    assert (get_status(monitor, AGENT).open_incidents, get_status(monitor, AGENT).pending_approvals) == (0, 0)
    _, pending_draft = report_runtime_failure(monitor, "Deploy failed on main")
    approvals.request_approval(monitor, AGENT, pending_draft, "needs an operator")
    resolved, _ = report_runtime_failure(monitor, "Nightly build failed")
    incidents.resolve_incident(monitor, OPERATOR, resolved, "fixed")
    approved_draft(monitor, "Smoke test failed")  # asked and approved: no longer pending

    view = get_status(monitor, AGENT)

    assert view.open_incidents == 2  # the resolved one is not counted
    assert view.pending_approvals == 1


def test_a_disabled_destination_reads_the_same_in_status_readyz_and_readiness(
    make_monitor: MonitorFactory, webhook_secret: str
) -> None:
    # get_status reads the disabled destinations on its own call's connection, /readyz (publish_readiness
    # without one) and Monitor.readiness on their own: the three say the same.
    monitor = make_monitor()
    with monitor.session() as session:
        disable_destination(session, "ops-webhook", "webhook answered 410 Gone", monitor.clock())
    [reason] = monitor.readiness("ops-webhook").reasons
    assert reason.startswith("disabled since ") and "webhook answered 410 Gone" in reason

    view = get_status(monitor, AGENT)
    alone = publish_readiness(monitor)

    [shown] = [d for d in view.destinations if d.destination_id == "ops-webhook"]
    assert (shown.ready, shown.reasons) == (False, [reason])
    assert [d.model_dump() for d in alone.destinations] == [d.model_dump() for d in view.destinations]
    assert view.readiness.publish_state == alone.state == "degraded"
    assert view.readiness.ingest_ready is True
