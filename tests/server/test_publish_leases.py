"""A publish in flight belongs to the process delivering it (issue 12): a second server or a new stdio session
started meanwhile never delivers it again; when that process is killed, recovery delivers it once, with the
same webhook-id. Real processes on one database (the SQLite file of one data directory, or PostgreSQL)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from sqlmodel import select

from incident_monitor.domain.enums import ReceiptStatus
from incident_monitor.domain.models import Receipt
from incident_monitor.policy.principal import local_operator
from incident_monitor.policy.scopes import DEFAULT_AGENT_SCOPES
from incident_monitor.service import tokens
from incident_monitor.service.monitor import Monitor
from support.drafts import approved_draft
from support.http_helpers import http_client
from support.monitors import WEBHOOK_SECRET_VARIABLE
from support.receivers import WebhookReceiver
from support.replica_processes import replica_set
from support.stdio_server import child_env, served

pytestmark = pytest.mark.anyio

LEASE_SECONDS = 3
# Far longer than the test: the first process is still mid-delivery when it is killed.
RECEIVER_DELAY_SECONDS = 50


def config_text(webhook_url: str) -> str:
    return f"""
[store]
publish_lease_seconds = {LEASE_SECONDS}
recovery_interval_seconds = 0.3

[[destinations]]
id = "ops-webhook"
kind = "webhook"
url = "{webhook_url}"
secret = "env:{WEBHOOK_SECRET_VARIABLE}"
allow_insecure_http = true
allow_private_networks = true
timeout_seconds = {RECEIVER_DELAY_SECONDS * 2}
max_attempts = 1
backoff_seconds = 0

[[routes]]
id = "runtime-failures"
destination_id = "ops-webhook"
priority = 10
match = {{ route_tags = ["runtime-failure"] }}
"""


def receipts(monitor: Monitor, draft_id: str) -> list[Receipt]:
    with monitor.session() as session:
        return list(session.exec(select(Receipt).where(Receipt.draft_id == draft_id)).all())


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    with anyio.move_on_after(timeout):
        while not condition():
            await anyio.sleep(0.05)
        return
    pytest.fail(f"never happened: {what}")


async def test_a_second_server_and_a_stdio_session_leave_an_in_flight_publish_to_its_process(
    tmp_path: Path, webhook_secret: str, store_url: str | None
) -> None:
    data_dir = tmp_path / "data"
    with WebhookReceiver(webhook_secret, delay_first_seconds=RECEIVER_DELAY_SECONDS) as receiver:
        config = tmp_path / "config.toml"
        config.write_text(config_text(receiver.url), encoding="utf-8")
        monitor = Monitor.open(config_path=config, data_dir=data_dir)
        try:
            draft_id = approved_draft(monitor)
            token = tokens.create_token(
                monitor, local_operator(), name="agent", scopes=sorted(DEFAULT_AGENT_SCOPES)
            ).secret
            with replica_set(config, tmp_path, store_url, shared_data_dir=data_dir) as servers:
                [first] = servers.start(1)

                async def publish_on_first() -> None:
                    with contextlib.suppress(Exception):  # never answered: the process is killed mid-call
                        async with http_client(first.url, token) as client:
                            await client.call_tool("publish_draft", {"draft_id": draft_id})

                async with anyio.create_task_group() as calls:
                    calls.start_soon(publish_on_first)
                    # The receiver holds the delivery and delays its answer: the first process is mid-publish.
                    await eventually(lambda: len(receiver.deliveries) == 1, "the first delivery")

                    # A second server starts (its start-up recovery and its loop run), and a stdio session comes
                    # and goes (its start-up recovery runs), all while the lease is live and renewed.
                    [second] = servers.start(1)
                    async with served(config, data_dir, child_env(), tmp_path / "stdio.log") as stdio:
                        await stdio.list_tools()
                    await anyio.sleep(LEASE_SECONDS * 2)  # renewed twice over: never lapsed
                    assert len(receiver.deliveries) == 1
                    [receipt] = receipts(monitor, draft_id)
                    assert receipt.status is ReceiptStatus.pending
                    assert receipt.claimed_by is not None and f":{first.process.pid}:" in receipt.claimed_by

                    # The first process dies mid-delivery: its claim is gone, and the second server finishes it.
                    killed_at = time.monotonic()
                    first.kill()
                    calls.cancel_scope.cancel()
                await eventually(
                    lambda: receipts(monitor, draft_id)[0].status is ReceiptStatus.published, "recovery", timeout=90
                )
                recovered_after = time.monotonic() - killed_at
                [receipt] = receipts(monitor, draft_id)
                assert receipt.claimed_by is not None and f":{second.process.pid}:" in receipt.claimed_by
        finally:
            monitor.close()
    ids = [delivery.webhook_id for delivery in receiver.deliveries]
    assert len(ids) == 2 and len(set(ids)) == 1, ids
    print(
        f"\nLEASES ({'postgresql' if store_url else 'sqlite'}): POSTs while in flight=1, after kill -9 of the holder="
        f"{len(ids)} with one webhook-id; recovered {recovered_after:.1f}s after the kill by {second.name}"
    )
