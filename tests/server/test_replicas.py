"""Fault tests on PostgreSQL with real processes: three replicas, one database, exactly one external effect.

Each replica is ``incident-monitor serve --transport http`` on its own port; the webhook destination is
the examples' signature-verifying receiver and the GitHub destination the contract stand-in.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlmodel import col, func, select

from incident_monitor.config import MonitorConfig
from incident_monitor.domain.enums import DraftStatus, ReceiptStatus
from incident_monitor.domain.io import IncidentReport
from incident_monitor.domain.models import Incident, Receipt
from incident_monitor.policy.principal import local_operator
from incident_monitor.policy.scopes import DEFAULT_AGENT_SCOPES, OPERATOR_SCOPES
from incident_monitor.service import approvals, intake, tokens
from incident_monitor.service.audit_checkpoints import verify_audit_log
from incident_monitor.service.monitor import Monitor
from support.github_fake import FakeGitHub
from support.http_helpers import http_client, http_server
from support.mcp_helpers import error_text
from support.monitors import AGENT, OPERATOR, WEBHOOK_SECRET_VARIABLE, new_webhook_secret
from support.pg_cluster import PostgresCluster, free_port
from support.receivers import WebhookReceiver
from support.replica_processes import CLI, ReplicaSet, replica_set

pytestmark = [pytest.mark.postgres_only, pytest.mark.anyio]

GITHUB_VARIABLE = "IM_REPLICA_GITHUB_TOKEN"
# Short, so the kill -9 test waits little; the holder renews it while it delivers (every third of it).
LEASE_SECONDS = 4


def replica_config(webhook_url: str, github_url: str) -> str:
    return f"""
[store]
publish_lease_seconds = {LEASE_SECONDS}
recovery_interval_seconds = 0.5

[http]
replicas = 3
stateless = true

[http.rate_limits]
principal_per_minute = 60000
principal_burst = 3000

[[destinations]]
id = "ops-webhook"
kind = "webhook"
url = "{webhook_url}"
secret = "env:{WEBHOOK_SECRET_VARIABLE}"
allow_insecure_http = true
allow_private_networks = true
timeout_seconds = 10
max_attempts = 2
backoff_seconds = 0

[[destinations]]
id = "gh"
kind = "github"
repo = "acme/incidents"
token = "env:{GITHUB_VARIABLE}"
api_url = "{github_url}"
allow_insecure_http = true
allow_private_networks = true
timeout_seconds = 10
max_attempts = 2
backoff_seconds = 0

[[routes]]
id = "runtime-failures"
destination_id = "ops-webhook"
priority = 10
match = {{ route_tags = ["runtime-failure"] }}

[[routes]]
id = "code-bugs"
destination_id = "gh"
priority = 20
match = {{ route_tags = ["code-bug"] }}
"""


class World:
    def __init__(self, monitor: Monitor, replicas: ReplicaSet, receiver: WebhookReceiver, github: FakeGitHub) -> None:
        self.monitor = monitor
        self.replicas = replicas
        self.receiver = receiver
        self.github = github
        self.agent_token = tokens.create_token(
            monitor, local_operator(), name="agent", scopes=sorted(DEFAULT_AGENT_SCOPES)
        ).secret
        self.operator_tokens = [
            tokens.create_token(monitor, local_operator(), name=f"operator-{n}", scopes=sorted(OPERATOR_SCOPES)).secret
            for n in (1, 2)
        ]

    def approved_draft(self, title: str, tag: str) -> str:
        result = intake.report_incident(
            self.monitor,
            AGENT,
            IncidentReport(title=title, source="ci", event=f"ci.{tag}", level="warning", route_tags=[tag]),
        )
        assert result.draft_id is not None
        asked = approvals.request_approval(self.monitor, AGENT, result.draft_id, "on-call should see this")
        approvals.decide_approval(self.monitor, OPERATOR, asked.approval.approval_id, "approve", "looks right")
        return result.draft_id

    def receipts(self, draft_id: str) -> list[Receipt]:
        with self.monitor.session() as session:
            return list(session.exec(select(Receipt).where(Receipt.draft_id == draft_id)).all())

    def chain_ok(self) -> bool:
        with self.monitor.session() as session:
            return verify_audit_log(self.monitor, session).ok


@pytest.fixture
def world(
    tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[World]:
    secret = new_webhook_secret()
    github_token = "ghp_" + secrets.token_hex(16)
    monkeypatch.setenv(WEBHOOK_SECRET_VARIABLE, secret)
    monkeypatch.setenv(GITHUB_VARIABLE, github_token)
    delay = getattr(request, "param", 0.0)
    with WebhookReceiver(secret, delay_first_seconds=delay) as receiver, FakeGitHub(token=github_token) as github:
        config_text = replica_config(receiver.url, github.url)
        config_path = tmp_path / "config.toml"
        config_path.write_text(config_text)
        import tomllib

        config = MonitorConfig.model_validate(tomllib.loads(config_text))
        monitor = Monitor.open(config=config, data_dir=tmp_path / "setup")
        with replica_set(config_path, tmp_path, store_url) as replicas:
            replicas.start(3)
            yield World(monitor, replicas, receiver, github)
        monitor.close()
        assert github.violations == []


async def publish_many(world: World, draft_id: str, calls: int, clients_per_replica: int = 3) -> list[dict[str, Any]]:
    """``calls`` publish_draft calls at once, spread over every replica (several clients each)."""
    urls = [replica.url for replica in world.replicas.replicas]
    slots = [urls[i % len(urls)] for i in range(len(urls) * clients_per_replica)]
    per_client = [calls // len(slots) + (1 if i < calls % len(slots) else 0) for i in range(len(slots))]

    async def client_calls(url: str, count: int) -> list[dict[str, Any]]:
        async with http_client(url, world.agent_token) as client:
            results = await asyncio.gather(
                *(client.call_tool("publish_draft", {"draft_id": draft_id}) for _ in range(count))
            )
        out = []
        for result in results:
            assert not result.is_error, error_text(result)
            assert result.structured_content is not None
            out.append(result.structured_content)
        return out

    batches = await asyncio.gather(*(client_calls(url, n) for url, n in zip(slots, per_client, strict=True)))
    return [result for batch in batches for result in batch]


async def wait_for(condition: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_100_concurrent_publishes_across_3_replicas_make_one_effect_each(world: World) -> None:
    to_webhook = world.approved_draft("Checkout smoke test failed", "runtime-failure")
    to_github = world.approved_draft("Null pointer in the billing job", "code-bug")

    webhook_results, github_results = await asyncio.gather(
        publish_many(world, to_webhook, 100), publish_many(world, to_github, 100)
    )

    for draft_id, results in ((to_webhook, webhook_results), (to_github, github_results)):
        assert len(results) == 100
        # Every call answered with the one receipt; the calls that lost the claim say they reused it.
        assert {r["receipt"]["receipt_id"] for r in results} == {world.receipts(draft_id)[0].receipt_id}
        assert sum(1 for r in results if not r["reused"]) == 1
    await wait_for(lambda: all(r.status is ReceiptStatus.published for r in world.receipts(to_webhook)))
    await wait_for(lambda: all(r.status is ReceiptStatus.published for r in world.receipts(to_github)))
    assert len(world.receiver.unique_webhook_ids()) == 1
    # Every delivery was an attempt of the one adapter call that settled the receipt (the adapter retries a
    # slow answer with the same webhook-id); none came from a second claim.
    [webhook_receipt] = world.receipts(to_webhook)
    assert len(world.receiver.deliveries) == webhook_receipt.attempt_count
    assert len(world.github.issues) == 1
    assert len(world.github.creates()) == 1
    assert [r.status for r in world.receipts(to_webhook)] == [ReceiptStatus.published]
    assert [r.status for r in world.receipts(to_github)] == [ReceiptStatus.published]
    assert world.chain_ok()
    print(
        f"\nREPLICAS publish x100 per draft: webhook deliveries={len(world.receiver.deliveries)} "
        f"distinct webhook-ids={len(world.receiver.unique_webhook_ids())}; github issues={len(world.github.issues)} "
        f"creates={len(world.github.creates())}; receipts published=2"
    )


@pytest.mark.parametrize("world", [6.0], indirect=True)
async def test_kill_9_of_the_claim_holder_is_finished_by_another_replica_once(world: World) -> None:
    draft_id = world.approved_draft("Checkout smoke test failed", "runtime-failure")
    holder = world.replicas.replicas[0]

    async def publish_on_holder() -> None:
        # Never answered: the replica dies mid-call and the connection drops.
        with contextlib.suppress(Exception):
            async with http_client(holder.url, world.agent_token) as client:
                await client.call_tool("publish_draft", {"draft_id": draft_id})

    task = asyncio.ensure_future(publish_on_holder())
    # The receiver has the delivery and delays its answer: the holder is mid-publish. Kill it.
    await wait_for(lambda: len(world.receiver.deliveries) == 1)
    holder.kill()
    await asyncio.gather(task, return_exceptions=True)
    [pending] = world.receipts(draft_id)
    assert pending.status is ReceiptStatus.pending

    # Another replica's recovery takes it once the lease lapses, through the same idempotent call.
    await wait_for(lambda: world.receipts(draft_id)[0].status is ReceiptStatus.published, timeout=90)
    [receipt] = world.receipts(draft_id)
    assert receipt.claimed_by is not None and str(holder.process.pid) not in receipt.claimed_by
    assert len(world.receiver.unique_webhook_ids()) == 1
    print(
        f"\nREPLICAS kill -9: deliveries={len(world.receiver.deliveries)} (same webhook-id) distinct webhook-ids="
        f"{len(world.receiver.unique_webhook_ids())}; receipt {receipt.status.value} by {receipt.claimed_by}"
    )
    assert world.chain_ok()


async def test_two_replicas_deciding_one_approval_one_wins(world: World) -> None:
    result = intake.report_incident(
        world.monitor,
        AGENT,
        IncidentReport(title="Payment job stalled", source="ci", event="ci.stall", route_tags=["runtime-failure"]),
    )
    assert result.draft_id is not None
    asked = approvals.request_approval(world.monitor, AGENT, result.draft_id, "on-call should see this")
    approval_id = asked.approval.approval_id
    first, second = world.replicas.replicas[:2]

    async def decide(url: str, token: str, decision: str) -> Any:
        async with http_client(url, token) as client:
            return await client.call_tool(
                "decide_approval", {"approval_id": approval_id, "decision": decision, "note": f"{decision} it"}
            )

    outcomes = await asyncio.gather(
        decide(first.url, world.operator_tokens[0], "approve"), decide(second.url, world.operator_tokens[1], "deny")
    )
    winners = [o for o in outcomes if not o.is_error]
    losers = [o for o in outcomes if o.is_error]
    assert len(winners) == 1 and len(losers) == 1
    assert "not pending" in error_text(losers[0]) or "already decided" in error_text(losers[0])
    decided = winners[0].structured_content
    assert decided is not None
    assert decided["draft_status"] in (DraftStatus.approved.value, DraftStatus.denied.value)
    assert world.chain_ok()


async def test_postgres_restart_under_load_loses_no_acknowledged_report(
    world: World, postgres: PostgresCluster
) -> None:
    acknowledged: list[str] = []
    failed = 0
    stop = asyncio.Event()

    async def reporter(url: str, worker: int) -> None:
        nonlocal failed
        n = 0
        while not stop.is_set():
            n += 1
            fingerprint = f"restart-{worker}-{n}"
            try:
                async with http_client(url, world.agent_token) as client:
                    while not stop.is_set():
                        result = await client.call_tool(
                            "report_incident",
                            {
                                "title": f"load {fingerprint}",
                                "source": "ci",
                                "event": "ci.load",
                                "fingerprint": fingerprint,
                            },
                        )
                        if result.is_error:
                            failed += 1
                        else:
                            acknowledged.append(fingerprint)
                        n += 1
                        fingerprint = f"restart-{worker}-{n}"
            except Exception:  # the connection broke mid-restart: a call not acknowledged
                failed += 1
                await asyncio.sleep(0.1)

    workers = [asyncio.ensure_future(reporter(replica.url, i)) for i, replica in enumerate(world.replicas.replicas * 2)]
    await wait_for(lambda: len(acknowledged) >= 30)
    await asyncio.to_thread(postgres.pg_ctl, "restart", "-m", "fast")
    before = len(acknowledged)
    await wait_for(lambda: len(acknowledged) >= before + 30, timeout=120)
    stop.set()
    await asyncio.gather(*workers, return_exceptions=True)

    with world.monitor.session() as session:
        # Stored scoped by the reporting principal (``<scope>|<fingerprint>``: service/intake.py).
        stored = {
            fingerprint.rsplit("|", 1)[-1]
            for fingerprint in session.exec(
                select(Incident.fingerprint).where(col(Incident.fingerprint).contains("restart-"))
            ).all()
        }
        total = session.exec(select(func.count()).select_from(Incident)).one()
    lost = [f for f in acknowledged if f not in stored]
    print(
        f"\nREPLICAS PG restart: acknowledged={len(acknowledged)} failed-or-broken={failed} stored={len(stored)} "
        f"lost={len(lost)} incidents={total}"
    )
    assert lost == []
    assert world.chain_ok()


def test_a_database_down_at_start_is_a_clear_error_without_the_password(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql+psycopg://monitor:hunter2-secret@127.0.0.1:{port}/monitor"
    env = {**os.environ, "INCIDENT_MONITOR_DATABASE_URL": url}
    config = tmp_path / "config.toml"
    config.write_text("", encoding="utf-8")
    done = subprocess.run(
        [str(CLI), "serve", "--transport", "http", "--port", "0", "--data-dir", str(tmp_path), "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert f"the database at 127.0.0.1:{port}/monitor cannot be reached or opened" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_readyz_says_not_ready_while_the_database_is_gone_and_recovers(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    name = postgres.create_database("gone")
    monitor = Monitor.open(config=MonitorConfig(), data_dir=tmp_path, database=postgres.url(name))
    try:
        with http_server(monitor, no_auth=True) as base, httpx2.Client(timeout=30) as client:
            assert client.get(f"{base}/readyz").json()["database"] == "ok"
            # The database goes away: no new connections, every open one cut.
            postgres.psql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
            postgres.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")  # noqa: S608
            gone = client.get(f"{base}/readyz")
            assert (gone.status_code, gone.json()["database"]) == (503, "unreachable")
            assert "cannot be reached" in gone.json()["problems"][0]
            # It comes back: a later probe finds it, on a fresh connection (the fault is remembered a few
            # seconds, store/faults.py, so a flapping database does not flap the balancer with it).
            postgres.psql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
            deadline = time.monotonic() + 60
            while (back := client.get(f"{base}/readyz")).status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert (back.status_code, back.json()["database"]) == (200, "ok")
            reported = intake.report_incident(
                monitor, AGENT, IncidentReport(title="Back again", source="ci", event="ci.back")
            )
            assert reported.incident_id
    finally:
        monitor.close()
